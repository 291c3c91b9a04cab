"""Schema CI: ``flare schema check`` (buf-compatible breaking-change detection
plus Flare's route rules) and ``flare schema build``.

Layout: `inputs` (directory / git ref / descriptor set) → `model` (indexed
images) → `rules` (buf's rules) and `flare_rules` (category FLARE), selected by
`config` → `check` (the pipeline) → `report` (output formats); `command` is the
CLI shell.
"""
