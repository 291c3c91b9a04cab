"""protoc-gen-flare and the flare command-line tools."""

from __future__ import annotations

__version__ = "0.1.0"
"""Printed in every generated file's header; keep in step with pyproject.toml."""
