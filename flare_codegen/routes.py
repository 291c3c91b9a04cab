"""The routing table of a schema as plain data (``flare routes``, schema CI).

Built from the same parse stage as the plugin, so the table printed here is
the table generated code declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from flare_codegen.compiler import compile_directory
from flare_codegen.errors import CompileError
from flare_codegen.model import File, Method, Transport
from flare_codegen.parameters import Parameters

# parse registers the option extensions; it must be imported before any
# descriptor set is decoded.
from flare_codegen.parse import parse_files
from flare_runtime.routing import wire_id


def load_routes(schema: Path) -> tuple[File, ...]:
    """Models of every file in `schema` (a directory of .proto files or a descriptor set).

    Every file with services or push messages is included. Raises
    `CompileError` on protoc failures, unreadable sets and validation errors.
    """
    if schema.is_dir():
        compiled = compile_directory(schema)
        files = list(compiled.files.file)
        targets = list(compiled.targets)
    else:
        try:
            data = schema.read_bytes()
            descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
        except (OSError, DecodeError) as error:
            raise CompileError(f"{schema}: not a readable FileDescriptorSet: {error}") from error
        files = list(descriptor_set.file)
        if not files:
            raise CompileError(f"{schema}: the descriptor set holds no files")
        # parse_files looks files up by name: an unnamed one would be skipped
        # and a repeated one would shadow the first, both silently.
        seen: set[str] = set()
        for proto in files:
            if not proto.name:
                raise CompileError(f"{schema}: a file in the descriptor set has no name")
            if proto.name in seen:
                raise CompileError(f"{schema}: the descriptor set holds {proto.name} twice")
            seen.add(proto.name)
        targets = [proto.name for proto in files]
    result = parse_files(files, targets, Parameters())
    if result.diagnostics:
        raise CompileError("\n".join(str(diagnostic) for diagnostic in result.diagnostics))
    return result.files


def _method_json(method: Method, service_id: int) -> dict[str, Any]:
    options = method.options
    order = list(Transport)
    return {
        "path": method.path,
        "name": method.name,
        "route_id": method.route_id,
        "wire_id": wire_id(service_id, method.route_id),
        "cardinality": method.cardinality.value.lower(),
        "request_type": method.request.full_name,
        "response_type": method.response.full_name,
        "handler_name": method.handler_name,
        "options": {
            "idempotent": options.idempotent,
            "auth": options.auth.value.lower(),
            "scopes": list(options.scopes),
            "default_timeout": options.default_timeout,
            "transports": [t.value.lower() for t in sorted(options.transports, key=order.index)],
            "max_message_bytes": options.max_message_bytes,
            "deprecated": options.deprecated,
            "deprecation_note": options.deprecation_note,
        },
    }


def routes_json(files: tuple[File, ...]) -> dict[str, Any]:
    """The table as JSON-ready data: ``{"services": [...], "push_types": [...]}``."""
    services: list[dict[str, Any]] = []
    pushes: list[dict[str, Any]] = []
    for model in files:
        for service in model.services:
            services.append(
                {
                    "name": service.full_name,
                    "file": model.proto_path,
                    "service_id": service.service_id,
                    "reserved_route_ids": [list(pair) for pair in service.reserved_route_ids],
                    "routes": [_method_json(m, service.service_id) for m in service.methods],
                }
            )
        pushes.extend(
            {
                "type_id": push.type_id,
                "message_type": push.message.full_name,
                "file": model.proto_path,
            }
            for push in model.pushes
        )
    return {"services": services, "push_types": pushes}


def routes_text(files: tuple[File, ...]) -> str:
    """The table for humans: one line per route and per push type."""
    lines: list[str] = []
    for model in files:
        for service in model.services:
            sid = service.service_id or "-"
            lines.append(f"{service.full_name} (service_id {sid}, {model.proto_path})")
            for method in service.methods:
                data = _method_json(method, service.service_id)
                transports = ",".join(data["options"]["transports"])
                route = method.route_id or "-"
                lines.append(
                    f"  {route:>5}  {data['cardinality']:<13} {method.path}  [{transports}]"
                )
    pushes = [(push.type_id, push.message.full_name) for model in files for push in model.pushes]
    if pushes:
        lines.append("push types")
        lines.extend(f"  {type_id:>5}  {name}" for type_id, name in sorted(pushes))
    return "\n".join(lines) + ("\n" if lines else "")
