"""Durable stores built on the same backends as the breakers: checkpoints and dead letters."""
