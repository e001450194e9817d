"""The ``polyroute`` command line: serve, chat, providers."""

from polyroute.cli.app import app, main

__all__ = ["app", "main"]
