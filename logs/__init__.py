"""The logs service: prints every line the other services push onto the log bus."""
