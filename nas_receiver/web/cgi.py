"""The page inside DSM: the package's ``ui/index.cgi`` runs ``python -m
nas_receiver.web.cgi``.  DSM's web server gives the request in the environment; only a
logged-in DSM administrator gets an answer with data (checked with DSM's authenticate.cgi).

``ui/index.cgi`` (written by postinst) names the configuration in ``NAS_RECEIVER_CONFIG``;
``NAS_RECEIVER_DSM_ROOT`` is where DSM's own files are (``/``; a test's stand-in DSM sets
another)."""

from __future__ import annotations

import os
from pathlib import Path
from wsgiref.handlers import CGIHandler

from ..config import load_config
from .app import App, Sources, guarded
from .auth import check_dsm


def main() -> None:
    root = Path(os.environ.get("NAS_RECEIVER_DSM_ROOT", "/"))
    config = Path(
        os.environ.get("NAS_RECEIVER_CONFIG") or "/var/packages/nas-receiver/var/config.yaml"
    )
    app = App(
        Sources(guarded(lambda: load_config(config))), lambda environ: check_dsm(environ, root)
    )
    CGIHandler().run(app)


if __name__ == "__main__":
    main()
