"""Tidings: a real-time session server for collaborative AI chat."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
