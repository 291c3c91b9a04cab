"""The code generator's exceptions, one tree rooted at `CodegenError`.

::

    CodegenError          every error flare_codegen raises on purpose; `message` is for the user
    ├── ParameterError    a plugin parameter string is unknown or malformed (also a ValueError)
    ├── CompileError      protoc rejected the input (its own diagnostics), or a schema or
    │                     descriptor set given to `flare gen` / `flare routes` is unreadable
    ├── InputError        one side of `flare schema check` / `build` cannot be read or compiled
    └── ConfigError       a schema CI configuration (buf.yaml, flare.toml...) is invalid

Every command of the ``flare`` CLI that runs code generation or schema CI
catches `CodegenError` and prints its `message` on one line (or protoc's own
lines) with exit status 1; the plugin reports it in
``CodeGeneratorResponse.error``. Anything else escaping is a bug.

The tree does not hang under `flare_runtime.errors.FlareError`: the plugin
and schema CI must not import the runtime (it would cost every protoc run
the runtime's start-up).
"""

from __future__ import annotations


class CodegenError(Exception):
    """Root of every exception flare_codegen raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """What to tell the user (may span lines when protoc reported several errors)."""


class ParameterError(CodegenError, ValueError):
    """The parameter string names an unknown parameter or has a bad value."""


class CompileError(CodegenError):
    """protoc rejected the input; `message` holds protoc's own diagnostics."""


class InputError(CodegenError):
    """An input of schema CI could not be read or compiled."""


class ConfigError(CodegenError):
    """A schema CI configuration is not valid; `message` says where and why."""
