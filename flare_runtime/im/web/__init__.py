"""The browser chat page of the IM demo: static files and a tiny HTTP server for them."""

from __future__ import annotations
