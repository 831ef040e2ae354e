"""Data-owner rules: code review, release policies, privacy (see issue 5)."""
