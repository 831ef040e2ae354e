"""Notebook-side client for researchers (see issue 4)."""
