"""Tests of polyroute.runtime (a package, so test module names never clash with other folders)."""
