"""Subcommands of the ``flare`` CLI (see `flare_codegen.cli`)."""
