"""nas-receiver: keeps Home Assistant backups safe on a NAS."""

__version__ = "0.1.0"
