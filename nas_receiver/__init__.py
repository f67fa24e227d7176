"""nas-receiver: keeps Home Assistant backups safe on a NAS."""

import os

__version__ = "0.1.0"

# pydantic looks for plugins through importlib.metadata on its first model (~50 ms at every
# start of the command); we use none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
