"""TypeScript output: ``protoc-gen-flare-ts`` and ``flare gen --ts``.

A second renderer over the same model as the Python output (`flare_codegen.model`,
built by `flare_codegen.parse`): per ``.proto`` file, ``<name>_flare.ts`` with
the push types, the routing table and a typed client per service for the
``@flare/client`` runtime (clients/typescript). Message types come from
``protoc-gen-es`` (``<name>_pb.ts``); `es_names` resolves the names and import
paths that plugin gives them.

Stages, as in the Python output: `plugin` (the I/O shell) → `parse.parse_files`
(descriptors + options → model) → `render` (model → text).
"""
