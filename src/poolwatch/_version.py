"""The installed version of poolwatch."""

__version__ = "0.1.0"
