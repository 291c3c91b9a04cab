"""An indexed view of one side of a comparison (the current or the previous schema).

`Image.build()` takes the compiled `FileDescriptorProto`s and indexes every
message, enum, service and extension by full name once, so that each rule is
a dictionary look-up per element instead of a search. Resolved protobuf
*features* (editions) are computed here too, because several buf rules compare
the effective behaviour (field presence, closed enums, UTF-8 validation, JSON
format, delimited encoding) rather than the syntax that produced it.

Source locations are looked up lazily, per file, only when a finding needs one:
most elements never produce a finding, so most files never build their
location table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf import descriptor_pb2

FieldProto = descriptor_pb2.FieldDescriptorProto

# Field numbers inside descriptor.proto, used to build source-code-info paths.
FILE_MESSAGE = 4
FILE_ENUM = 5
FILE_SERVICE = 6
FILE_EXTENSION = 7
FILE_PACKAGE = 2
FILE_OPTIONS = 8
FILE_SYNTAX = 12
MESSAGE_FIELD = 2
MESSAGE_NESTED = 3
MESSAGE_ENUM = 4
MESSAGE_EXTENSION = 6
MESSAGE_OPTIONS = 7
MESSAGE_ONEOF = 8
ENUM_VALUE = 2
ENUM_OPTIONS = 3
SERVICE_METHOD = 2
SERVICE_OPTIONS = 3
FIELD_NAME = 1
FIELD_TYPE = 5
FIELD_TYPE_NAME = 6
FIELD_DEFAULT = 7
FIELD_OPTIONS = 8
FIELD_JSON_NAME = 10
VALUE_NUMBER = 2
METHOD_INPUT = 2
METHOD_OUTPUT = 3
METHOD_OPTIONS = 4
# `features` inside each options message, and the feature fields themselves.
FILE_OPTIONS_FEATURES = 50
MESSAGE_OPTIONS_FEATURES = 12
FIELD_OPTIONS_FEATURES = 21
ENUM_OPTIONS_FEATURES = 7
ONEOF_OPTIONS_FEATURES = 1
FEATURE_ENUM_TYPE = 2
FEATURE_UTF8_VALIDATION = 4
FEATURE_JSON_FORMAT = 6
# Extensions of FeatureSet: (pb.cpp) = 1000 {string_type = 2},
# (pb.java) = 1001 {utf8_validation = 2}.
CPP_FEATURES = 1000
JAVA_FEATURES = 1001
CPP_STRING_TYPE = 2
JAVA_UTF8_VALIDATION = 2

# FeatureSet enum values (descriptor.proto).
PRESENCE_EXPLICIT, PRESENCE_IMPLICIT, PRESENCE_LEGACY_REQUIRED = 1, 2, 3
ENUM_OPEN, ENUM_CLOSED = 1, 2
UTF8_VERIFY, UTF8_NONE = 2, 3
ENCODING_LENGTH_PREFIXED, ENCODING_DELIMITED = 1, 2
JSON_ALLOW, JSON_LEGACY_BEST_EFFORT = 1, 2
# CppFeatures.StringType and JavaFeatures.Utf8Validation.
CPP_VIEW, CPP_CORD, CPP_STRING = 1, 2, 3
JAVA_DEFAULT, JAVA_VERIFY = 1, 2

EDITION_2023 = 1000
EDITION_2024 = 1001


class Features(NamedTuple):
    """The resolved features that buf's rules look at."""

    field_presence: int
    enum_type: int
    utf8_validation: int
    message_encoding: int
    json_format: int
    cpp_string_type: int
    java_utf8_validation: int


PROTO2_DEFAULTS = Features(
    PRESENCE_EXPLICIT, ENUM_CLOSED, UTF8_NONE, ENCODING_LENGTH_PREFIXED,
    JSON_LEGACY_BEST_EFFORT, CPP_STRING, JAVA_DEFAULT,
)  # fmt: skip
PROTO3_DEFAULTS = Features(
    PRESENCE_IMPLICIT, ENUM_OPEN, UTF8_VERIFY, ENCODING_LENGTH_PREFIXED,
    JSON_ALLOW, CPP_STRING, JAVA_DEFAULT,
)  # fmt: skip
EDITION_2023_DEFAULTS = Features(
    PRESENCE_EXPLICIT, ENUM_OPEN, UTF8_VERIFY, ENCODING_LENGTH_PREFIXED,
    JSON_ALLOW, CPP_STRING, JAVA_DEFAULT,
)  # fmt: skip
EDITION_2024_DEFAULTS = EDITION_2023_DEFAULTS._replace(cpp_string_type=CPP_VIEW)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _scan_fields(data: bytes) -> dict[int, int | bytes]:
    """Top-level fields of an encoded message: number -> last varint or bytes value."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], pos = _read_varint(data, pos)
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            fields[number] = data[pos : pos + length]
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:  # groups do not occur in FeatureSet; stop rather than misread
            break
    return fields


def _custom_feature(features: descriptor_pb2.FeatureSet, extension: int, number: int) -> int:
    """Value of ``features.(pb.cpp|pb.java).<number>``, or 0 when unset.

    The language feature extensions are not compiled into Python's protobuf
    package, so they stay unknown fields: read them from the wire bytes.
    """
    data = features.SerializeToString()
    if not data:
        return 0
    nested = _scan_fields(data).get(extension)
    if not isinstance(nested, bytes):
        return 0
    value = _scan_fields(nested).get(number)
    return value if isinstance(value, int) else 0


def merge_features(base: Features, options_features: descriptor_pb2.FeatureSet) -> Features:
    """`base` overridden by the features explicitly set in `options_features`."""
    f = options_features
    cpp = _custom_feature(f, CPP_FEATURES, CPP_STRING_TYPE)
    java = _custom_feature(f, JAVA_FEATURES, JAVA_UTF8_VALIDATION)
    return Features(
        f.field_presence or base.field_presence,
        f.enum_type or base.enum_type,
        f.utf8_validation or base.utf8_validation,
        f.message_encoding or base.message_encoding,
        f.json_format or base.json_format,
        cpp or base.cpp_string_type,
        java or base.java_utf8_validation,
    )


def _with_options(base: Features, options: object, has_options: bool) -> Features:
    if not has_options:
        return base
    features = getattr(options, "features", None)
    if features is None or not options.HasField("features"):  # type: ignore[attr-defined]
        return base
    return merge_features(base, features)


@dataclass(slots=True, eq=False)
class FileInfo:
    """One `.proto` file of the image."""

    proto: descriptor_pb2.FileDescriptorProto
    name: str
    package: str
    syntax: str  # "proto2", "proto3" or "editions"
    edition: int
    features: Features
    map_entry_fields: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)
    """path of a synthetic map-entry message -> path of the map field declaring it."""
    _locations: dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location] | None = None

    def location(self, path: tuple[int, ...]) -> descriptor_pb2.SourceCodeInfo.Location | None:
        """The source location recorded for `path`, or None (lazy, first one wins)."""
        table = self._locations
        if table is None:
            table = {}
            for loc in self.proto.source_code_info.location:
                key = tuple(loc.path)
                if key not in table:
                    table[key] = loc
            self._locations = table
        found = table.get(path)
        if found is None and self.map_entry_fields:
            # protoc records no locations inside synthetic map entries; like buf,
            # point at the map field that declares the entry.
            for length in range(len(path), 0, -1):
                alias = self.map_entry_fields.get(path[:length])
                if alias is not None:
                    return table.get(alias)
        return found


@dataclass(slots=True, eq=False)
class MessageInfo:
    """A message (nested ones too, map entries included) and where it sits."""

    proto: descriptor_pb2.DescriptorProto
    file: FileInfo
    path: tuple[int, ...]
    nested_name: str
    full_name: str
    parent: MessageInfo | None
    features: Features
    _fields: dict[int, FieldInfo] | None = None

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def is_map_entry(self) -> bool:
        return self.proto.options.map_entry

    def fields_by_number(self) -> dict[int, FieldInfo]:
        """The message's own fields (not extensions declared inside it) by number."""
        fields = self._fields
        if fields is None:
            fields = {}
            for index, proto in enumerate(self.proto.field):
                fields[proto.number] = FieldInfo(
                    proto, self.file, (*self.path, MESSAGE_FIELD, index), self, None, self.features
                )
            self._fields = fields
        return fields


@dataclass(slots=True, eq=False)
class EnumInfo:
    """An enum and where it sits."""

    proto: descriptor_pb2.EnumDescriptorProto
    file: FileInfo
    path: tuple[int, ...]
    nested_name: str
    full_name: str
    features: Features

    @property
    def name(self) -> str:
        return self.proto.name

    def values_by_number(self) -> dict[int, dict[str, int]]:
        """number -> {value name: index in the enum}, aliases included."""
        result: dict[int, dict[str, int]] = {}
        for index, value in enumerate(self.proto.value):
            result.setdefault(value.number, {})[value.name] = index
        return result


@dataclass(slots=True, eq=False)
class ServiceInfo:
    """A service and where it sits."""

    proto: descriptor_pb2.ServiceDescriptorProto
    file: FileInfo
    path: tuple[int, ...]
    full_name: str

    @property
    def name(self) -> str:
        return self.proto.name


@dataclass(slots=True, eq=False)
class FieldInfo:
    """A message field or an extension."""

    proto: FieldProto
    file: FileInfo
    path: tuple[int, ...]
    message: MessageInfo | None  # containing message (None for a file-level extension)
    extendee: str | None  # extendee without the leading dot, for extensions
    scope_features: Features  # features of the enclosing message or file
    _features: Features | None = None

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def number(self) -> int:
        return self.proto.number

    @property
    def full_name(self) -> str:
        scope = self.message.full_name if self.message else self.file.package
        return f"{scope}.{self.proto.name}" if scope else self.proto.name

    def oneof(self) -> descriptor_pb2.OneofDescriptorProto | None:
        if self.message is None or not self.proto.HasField("oneof_index"):
            return None
        return self.message.proto.oneof_decl[self.proto.oneof_index]

    def real_oneof(self) -> descriptor_pb2.OneofDescriptorProto | None:
        """The containing oneof, unless it is proto3's synthetic one for `optional`."""
        if self.proto.proto3_optional:
            return None
        return self.oneof()

    def features(self) -> Features:
        """Resolved features: file, enclosing messages, oneof, then the field's own."""
        resolved = self._features
        if resolved is None:
            resolved = self.scope_features
            oneof = self.oneof()
            if oneof is not None and oneof.HasField("options"):
                resolved = _with_options(resolved, oneof.options, True)
            if self.proto.HasField("options"):
                resolved = _with_options(resolved, self.proto.options, True)
            self._features = resolved
        return resolved

    def description(self, with_name: bool = True) -> str:
        """buf's "Field "1" with name "x" on message "M"" phrase."""
        name = ""
        if with_name:
            name = f' with name "{self.full_name if self.extendee is not None else self.name}"'
        if self.extendee is not None:
            return f'Extension "{self.number}"{name} on message "{self.extendee}"'
        parent = self.message.name if self.message else ""
        return f'Field "{self.number}"{name} on message "{parent}"'


class _FileIndexer:
    """Walks one file's declarations into the image's and the file's tables."""

    def __init__(self, image: Image, file: FileInfo) -> None:
        self.image = image
        self.file = file
        self.prefix = f"{file.package}." if file.package else ""
        self.messages: dict[str, MessageInfo] = {}
        self.enums: dict[str, EnumInfo] = {}
        self.extensions: dict[str, FieldInfo] = {}

    def add_enum(
        self,
        proto: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        scope: str,
        parent_features: Features,
    ) -> None:
        nested = f"{scope}{proto.name}"
        features = _with_options(parent_features, proto.options, proto.HasField("options"))
        info = EnumInfo(proto, self.file, path, nested, self.prefix + nested, features)
        self.enums[nested] = info
        self.image.enums[info.full_name] = info

    def add_message(
        self,
        proto: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        scope: str,
        parent: MessageInfo | None,
        parent_features: Features,
    ) -> None:
        nested = f"{scope}{proto.name}"
        features = _with_options(parent_features, proto.options, proto.HasField("options"))
        info = MessageInfo(proto, self.file, path, nested, self.prefix + nested, parent, features)
        self.messages[nested] = info
        self.image.messages[info.full_name] = info
        if proto.nested_type:
            self._note_map_entries(proto, path)
        inner = nested + "."
        for index, enum in enumerate(proto.enum_type):
            self.add_enum(enum, (*path, MESSAGE_ENUM, index), inner, features)
        for index, message in enumerate(proto.nested_type):
            self.add_message(message, (*path, MESSAGE_NESTED, index), inner, info, features)
        for index, ext in enumerate(proto.extension):
            self.add_extension(ext, (*path, MESSAGE_EXTENSION, index), info, features)

    def _note_map_entries(
        self, proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...]
    ) -> None:
        entries = {m.name: i for i, m in enumerate(proto.nested_type) if m.options.map_entry}
        if not entries:
            return
        for index, f in enumerate(proto.field):
            entry = entries.get(f.type_name.rsplit(".", 1)[-1])
            if entry is not None and f.label == FieldProto.LABEL_REPEATED:
                entry_path = (*path, MESSAGE_NESTED, entry)
                self.file.map_entry_fields[entry_path] = (*path, MESSAGE_FIELD, index)

    def add_extension(
        self,
        proto: FieldProto,
        path: tuple[int, ...],
        scope: MessageInfo | None,
        features: Features,
    ) -> None:
        extendee = proto.extendee.lstrip(".")
        info = FieldInfo(proto, self.file, path, scope, extendee, features)
        scope_name = scope.nested_name + "." if scope else ""
        self.extensions[scope_name + proto.name] = info
        self.image.extensions.setdefault(extendee, {})[proto.number] = info


@dataclass(slots=True, eq=False)
class Image:
    """Everything one side of a comparison defines, indexed for the rules."""

    files: dict[str, FileInfo]
    all_files: dict[str, descriptor_pb2.FileDescriptorProto]
    messages: dict[str, MessageInfo] = field(default_factory=dict)
    enums: dict[str, EnumInfo] = field(default_factory=dict)
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    extensions: dict[str, dict[int, FieldInfo]] = field(default_factory=dict)
    file_messages: dict[str, dict[str, MessageInfo]] = field(default_factory=dict)
    file_enums: dict[str, dict[str, EnumInfo]] = field(default_factory=dict)
    file_services: dict[str, dict[str, ServiceInfo]] = field(default_factory=dict)
    file_extensions: dict[str, dict[str, FieldInfo]] = field(default_factory=dict)
    _all_enums: dict[str, descriptor_pb2.EnumDescriptorProto] | None = None
    _all_messages: dict[str, descriptor_pb2.DescriptorProto] | None = None

    @classmethod
    def build(
        cls,
        files: list[descriptor_pb2.FileDescriptorProto],
        targets: set[str],
    ) -> Image:
        """Index the files named in `targets`; the others only resolve references."""
        image = cls(files={}, all_files={f.name: f for f in files})
        for proto in files:
            if proto.name in targets:
                image._add_file(proto)
        return image

    def _add_file(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        syntax = proto.syntax or "proto2"
        edition = proto.edition if syntax == "editions" else 0
        if syntax == "proto3":
            base = PROTO3_DEFAULTS
        elif syntax == "editions":
            base = EDITION_2024_DEFAULTS if edition >= EDITION_2024 else EDITION_2023_DEFAULTS
        else:
            base = PROTO2_DEFAULTS
        features = _with_options(base, proto.options, proto.HasField("options"))
        info = FileInfo(proto, proto.name, proto.package, syntax, edition, features)
        self.files[proto.name] = info
        indexer = _FileIndexer(self, info)
        for index, enum in enumerate(proto.enum_type):
            indexer.add_enum(enum, (FILE_ENUM, index), "", features)
        for index, message in enumerate(proto.message_type):
            indexer.add_message(message, (FILE_MESSAGE, index), "", None, features)
        for index, ext in enumerate(proto.extension):
            indexer.add_extension(ext, (FILE_EXTENSION, index), None, features)
        services: dict[str, ServiceInfo] = {}
        for index, service in enumerate(proto.service):
            full_name = indexer.prefix + service.name
            service_info = ServiceInfo(service, info, (FILE_SERVICE, index), full_name)
            services[service.name] = service_info
            self.services[full_name] = service_info
        self.file_messages[proto.name] = indexer.messages
        self.file_enums[proto.name] = indexer.enums
        self.file_services[proto.name] = services
        self.file_extensions[proto.name] = indexer.extensions

    def enum_proto(self, full_name: str) -> descriptor_pb2.EnumDescriptorProto | None:
        """Any enum of the image (imports included) by full name."""
        info = self.enums.get(full_name)
        if info is not None:
            return info.proto
        if self._all_enums is None:
            self._index_all()
        assert self._all_enums is not None
        return self._all_enums.get(full_name)

    def message_proto(self, full_name: str) -> descriptor_pb2.DescriptorProto | None:
        """Any message of the image (imports included) by full name."""
        info = self.messages.get(full_name)
        if info is not None:
            return info.proto
        if self._all_messages is None:
            self._index_all()
        assert self._all_messages is not None
        return self._all_messages.get(full_name)

    def _index_all(self) -> None:
        enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        messages: dict[str, descriptor_pb2.DescriptorProto] = {}

        def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
            name = prefix + message.name
            messages[name] = message
            for enum in message.enum_type:
                enums[f"{name}.{enum.name}"] = enum
            for nested in message.nested_type:
                walk(name + ".", nested)

        for proto in self.all_files.values():
            prefix = f"{proto.package}." if proto.package else ""
            for enum in proto.enum_type:
                enums[prefix + enum.name] = enum
            for message in proto.message_type:
                walk(prefix, message)
        self._all_enums = enums
        self._all_messages = messages

    def packages(self) -> dict[str, list[FileInfo]]:
        """package -> files declaring it."""
        result: dict[str, list[FileInfo]] = {}
        for info in self.files.values():
            result.setdefault(info.package, []).append(info)
        return result
