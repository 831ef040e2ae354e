"""Tests of the owner web console (issue 12)."""
