"""The pure core: states, config, windows and transition rules. No asyncio, redis or clock."""
