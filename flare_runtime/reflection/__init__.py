"""Server reflection: what a server serves, for tools without its generated code.

Two halves:

* `flare_runtime.reflection.service`: `ReflectionService`, the server side of
  ``flare.reflection.v1.Reflection`` (schemas/flare/reflection/v1/reflection.proto),
  which every `flare_runtime.Server` serves on WebSocket and QUIC unless built
  with ``reflection=False``. On gRPC the standard ``grpc.reflection.v1`` and
  ``v1alpha`` services answer instead (`flare_runtime.transports.grpc_server`).
* `flare_runtime.reflection.schema`: the client side. `RemoteSchema` asks a
  server (Flare reflection on the wire transports, gRPC reflection on gRPC) or
  reads local generated modules, and builds `Route` objects, push tables and
  messages from the descriptors at run time (protobuf's descriptor pool and
  message factory). ``flare call``, ``list``, ``describe`` and ``watch`` use it.

docs/cli.md ("Reflection") documents both.
"""
