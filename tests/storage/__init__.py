"""Tests of polyroute.storage (a package, so test module names never clash with other folders)."""
