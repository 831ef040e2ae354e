"""Admin and data-owner side of fedimg: convert, verify and report a federated image dataset."""

__version__ = "0.1.0"
