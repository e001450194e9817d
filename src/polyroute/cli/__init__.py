"""The ``polyroute`` command line: serve, chat, providers, status, check."""

from polyroute.cli import check, status  # noqa: F401 - importing them registers their commands
from polyroute.cli.app import app, main

__all__ = ["app", "main"]
