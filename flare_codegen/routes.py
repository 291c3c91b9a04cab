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
from flare_codegen.descriptor_text import first_invalid_text
from flare_codegen.errors import CompileError
from flare_codegen.model import File, Method
from flare_codegen.parameters import Parameters

# parse registers the option extensions; it must be imported before any
# descriptor set is decoded.
from flare_codegen.parse import parse_files
from flare_runtime.routing import AuthRequirement, Transport, split_wire_id, wire_id


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
        invalid = first_invalid_text(descriptor_set)
        if invalid is not None:
            raise CompileError(
                f"{schema}: not a readable FileDescriptorSet (not UTF-8 text in {invalid})"
            )
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
        "cardinality": method.cardinality.value,
        "request_type": method.request.full_name,
        "response_type": method.response.full_name,
        "handler_name": method.handler_name,
        "options": {
            "idempotent": options.idempotent,
            "auth": options.auth.value,
            "scopes": list(options.scopes),
            "default_timeout": options.default_timeout,
            "transports": [t.value for t in sorted(options.transports, key=order.index)],
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


def _auth_text(method: Method) -> str:
    options = method.options
    if options.auth is AuthRequirement.NONE:
        return "none"
    return f"authenticated [{' '.join(options.scopes)}]" if options.scopes else "authenticated"


def _options_text(method: Method) -> str:
    options = method.options
    parts: list[str] = []
    if options.idempotent:
        parts.append("idempotent")
    if options.default_timeout is not None:
        parts.append(f"timeout {options.default_timeout:g}s")
    if options.max_message_bytes is not None:
        parts.append(f"max {options.max_message_bytes} bytes")
    if options.deprecated:
        parts.append(
            f"deprecated: {options.deprecation_note}" if options.deprecation_note else "deprecated"
        )
    return ", ".join(parts) or "-"


def _table(rows: list[list[str]], right: frozenset[int]) -> list[str]:
    """`rows` (the header first) in columns two spaces apart, `right` ones right-aligned."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def routes_text(files: tuple[File, ...]) -> str:
    """The table for humans: per service, one line per route with its ids and resolved options.

    The wire id is printed in hex (``0x0001_0002`` is service 1, route 2) and is
    ``-`` for a gRPC-only route; the JSON form (`routes_json`) carries the same facts.
    """
    lines: list[str] = []
    header = ["route", "wire id", "cardinality", "path", "transports", "auth", "options"]
    order = list(Transport)
    for model in files:
        for service in model.services:
            head = (
                f"{service.full_name}  service_id {service.service_id or '-'}  {model.proto_path}"
            )
            if service.reserved_route_ids:
                ranges = ", ".join(
                    str(start) if start == end else f"{start}-{end}"
                    for start, end in service.reserved_route_ids
                )
                head += f"  reserved route ids {ranges}"
            lines.append(head)
            rows = [header]
            for method in service.methods:
                wire = wire_id(service.service_id, method.route_id)
                transports = sorted(method.options.transports, key=order.index)
                rows.append(
                    [
                        str(method.route_id or "-"),
                        "0x{:04x}_{:04x}".format(*split_wire_id(wire)) if wire else "-",
                        method.cardinality.value,
                        method.path,
                        ",".join(t.value for t in transports),
                        _auth_text(method),
                        _options_text(method),
                    ]
                )
            if service.methods:
                lines.extend(_table(rows, frozenset({0})))
    pushes = [
        [str(push.type_id), push.message.full_name, model.proto_path]
        for model in files
        for push in model.pushes
    ]
    if pushes:
        lines.append("push types")
        pushes.sort(key=lambda row: int(row[0]))
        lines.extend(_table([["type id", "message", "file"], *pushes], frozenset({0})))
    return "\n".join(lines) + ("\n" if lines else "")
