"""Where breaker state and stored data live: in-process memory (default) or Redis."""
