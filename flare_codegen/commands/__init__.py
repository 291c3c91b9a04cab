"""The code-generation subcommands of the ``flare`` CLI (its table: `flare_runtime.cli`)."""
