"""Where ``protoc-gen-es`` (v2) puts a message and what it names it.

`_flare.ts` imports the message schemas ``protoc-gen-es`` generates, so it
must name them exactly as that plugin does: per file, the schema of message
``pkg.Outer.Inner`` is ``Outer_InnerSchema`` in ``pkg/path/file_pb.ts``,
unless a name clashes, in which case ``$``/``$1``… is appended in the order
``@bufbuild/protoplugin``'s ``allNames`` claims names (shapes first, then
descriptors, file first); reserved words get ``$``. Well-known types are
imported from ``@bufbuild/protobuf/wkt``. This module replicates those rules
(``@bufbuild/protoplugin`` 2.x: names.js, safe-identifier.js, and
``@bufbuild/protobuf/codegenv2`` symbols.js); the tsc test of the generated
code fails when they drift.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

RUNTIME_PACKAGE = "@bufbuild/protobuf"
_WKT_BARREL = RUNTIME_PACKAGE + "/wkt"
_WKT_BARREL_FILES = frozenset(
    {
        "google/protobuf/compiler/plugin.proto",
        "google/protobuf/any.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/empty.proto",
        "google/protobuf/field_mask.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/wrappers.proto",
    }
)
_WKT_SUBPATH_FILES = frozenset(
    {
        "google/protobuf/api.proto",
        "google/protobuf/c_sharp_features.proto",
        "google/protobuf/cpp_features.proto",
        "google/protobuf/cpp_file_options.proto",
        "google/protobuf/cpp_options.proto",
        "google/protobuf/go_features.proto",
        "google/protobuf/java_features.proto",
        "google/protobuf/json_enumvalue_options.proto",
        "google/protobuf/json_options.proto",
        "google/protobuf/source_context.proto",
        "google/protobuf/type.proto",
    }
)

_RESERVED = frozenset(
    {
        # ECMAScript 2015 keywords
        *[
            "break",
            "case",
            "catch",
            "class",
            "const",
            "continue",
            "debugger",
            "default",
            "delete",
            "do",
            "else",
            "export",
        ],
        *[
            "extends",
            "false",
            "finally",
            "for",
            "function",
            "if",
            "import",
            "in",
            "instanceof",
            "new",
            "null",
            "return",
        ],
        *[
            "super",
            "switch",
            "this",
            "throw",
            "true",
            "try",
            "typeof",
            "var",
            "void",
            "while",
            "with",
            "yield",
        ],
        # ECMAScript 2015 future reserved keywords
        *[
            "enum",
            "implements",
            "interface",
            "let",
            "package",
            "private",
            "protected",
            "public",
            "static",
        ],
        # ES5 CommonJS class names, TypeScript type keywords, runtime identifiers
        *[
            "Object",
            "bigint",
            "number",
            "boolean",
            "string",
            "object",
            "globalThis",
            "Uint8Array",
            "Partial",
        ],
    }
)

IMPORT_EXTENSIONS = ("none", "js", "ts")
"""``protoc-gen-es``'s ``import_extension`` values (its default is ``none``)."""


def safe_identifier(name: str) -> str:
    """``protoc-gen-es``'s ``safeIdentifier``: a reserved word gets ``$`` appended."""
    return name + "$" if name in _RESERVED else name


def wkt_import_path(proto_file: str) -> str | None:
    """The module a well-known type file's symbols are imported from, or None."""
    if proto_file in _WKT_BARREL_FILES:
        return _WKT_BARREL
    if proto_file in _WKT_SUBPATH_FILES:
        return f"{_WKT_BARREL}/{proto_file.removesuffix('.proto')}_pb.js"
    return None


@dataclass(frozen=True, slots=True)
class EsSymbol:
    """A message schema as ``protoc-gen-es`` exports it."""

    name: str
    """The exported identifier, ``Outer_InnerSchema``."""
    proto_file: str
    """The ``.proto`` that declares it; its module is ``<stem>_pb.ts`` (or a wkt path)."""


@dataclass(frozen=True, slots=True)
class _Element:
    kind: str  # "message", "enum", "service", "extension"
    type_name: str  # full name without the leading dot


def _nested(prefix: str, message: descriptor_pb2.DescriptorProto) -> Iterator[_Element]:
    """`nestedTypes(message)`: nested messages (each followed by its own), enums, extensions."""
    for nested in message.nested_type:
        if nested.options.map_entry:
            continue
        name = f"{prefix}.{nested.name}"
        yield _Element("message", name)
        yield from _nested(name, nested)
    for enum in message.enum_type:
        yield _Element("enum", f"{prefix}.{enum.name}")
    for extension in message.extension:
        yield _Element("extension", f"{prefix}.{extension.name}")


def _file_elements(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[_Element]:
    """`nestedTypes(file)`: messages (each followed by its nested types), enums, services,
    extensions, in declaration order."""
    prefix = proto.package
    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    for message in proto.message_type:
        name = join(message.name)
        yield _Element("message", name)
        yield from _nested(name, message)
    for enum in proto.enum_type:
        yield _Element("enum", join(enum.name))
    for service in proto.service:
        yield _Element("service", join(service.name))
    for extension in proto.extension:
        yield _Element("extension", join(extension.name))


def _salted(base: str, index: int) -> str:
    salt = "" if index == 0 else "$" if index == 1 else f"${index - 1}"
    return safe_identifier(base + salt)


def _claim(base: str, taken: set[str]) -> str:
    index = 0
    while (name := _salted(base, index)) in taken:
        index += 1
    taken.add(name)
    return name


def file_schema_names(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Message full name → exported schema name, for every message of one file."""
    package = proto.package
    offset = len(package) + 1 if package else 0
    elements = list(_file_elements(proto))
    taken: set[str] = set()
    for element in elements:  # first pass: shape names (messages, enums)
        if element.kind in ("message", "enum"):
            _claim(element.type_name[offset:].replace(".", "_"), taken)
    _claim("file_" + re.sub(r"[^a-zA-Z0-9_]+", "_", proto.name.removesuffix(".proto")), taken)
    names: dict[str, str] = {}
    for element in elements:  # second pass: descriptor names
        identifier = element.type_name[offset:].replace(".", "_")
        if element.kind in ("message", "enum"):
            identifier += "Schema"
        name = _claim(identifier, taken)
        if element.kind == "message":
            names[element.type_name] = name
    return names


class EsSymbols:
    """Looks up the ``protoc-gen-es`` symbol of any message among a request's files."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self._by_message: dict[str, EsSymbol] = {}
        for proto in files:
            for full_name, name in file_schema_names(proto).items():
                self._by_message[full_name] = EsSymbol(name, proto.name)

    def schema(self, full_name: str) -> EsSymbol:
        """The schema of message `full_name` (no leading dot); KeyError when unknown."""
        return self._by_message[full_name]


def import_path(importer: str, proto_file: str, extension: str) -> str:
    """The module specifier `importer` (an output path) uses for `proto_file`'s symbols.

    Well-known types come from ``@bufbuild/protobuf/wkt``; others are
    ``<stem>_pb`` relative to the importer, with ``import_extension`` applied
    as ``protoc-gen-es`` does (none: no extension; js; ts).
    """
    wkt = wkt_import_path(proto_file)
    if wkt is not None:
        return wkt
    target = proto_file.removesuffix(".proto") + "_pb"
    relative = posixpath.relpath(target, posixpath.dirname(importer) or ".")
    if not relative.startswith("../"):
        relative = "./" + relative
    if extension == "none":
        return relative
    return f"{relative}.{extension}"


def output_path(proto_file: str) -> str:
    """The file ``protoc-gen-flare-ts`` writes for `proto_file`: ``a/b/c_flare.ts``."""
    return proto_file.removesuffix(".proto") + "_flare.ts"


def sorted_unique(names: Sequence[str]) -> list[str]:
    """Names sorted and without repeats (deterministic import lists)."""
    return sorted(set(names))
