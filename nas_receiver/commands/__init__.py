"""The command handlers, one module per group; the CLI imports them only when used."""
