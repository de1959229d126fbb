"""Lua scripts, one ``.lua`` file each, every file opening with its KEYS/ARGV/returns contract."""
