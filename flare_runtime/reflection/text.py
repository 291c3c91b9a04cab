"""Descriptors as ``.proto`` source text: what ``flare describe`` prints.

`describe` renders a service, method, message, enum or field the way it
would be written in a ``.proto`` file (as grpcurl's ``describe`` does): type
names fully qualified with a leading dot, Flare's options (service and route
ids, push type ids...) as ``option (flare.options.v1...) = {...};`` lines.
Comments are not shown: servers' descriptors carry none.
"""

from __future__ import annotations

from typing import Any

from flare.options.v1 import options_pb2
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from flare_runtime.reflection.schema import Symbol

_Field = descriptor_pb2.FieldDescriptorProto

_SCALARS = {
    _Field.TYPE_DOUBLE: "double",
    _Field.TYPE_FLOAT: "float",
    _Field.TYPE_INT64: "int64",
    _Field.TYPE_UINT64: "uint64",
    _Field.TYPE_INT32: "int32",
    _Field.TYPE_FIXED64: "fixed64",
    _Field.TYPE_FIXED32: "fixed32",
    _Field.TYPE_BOOL: "bool",
    _Field.TYPE_STRING: "string",
    _Field.TYPE_BYTES: "bytes",
    _Field.TYPE_UINT32: "uint32",
    _Field.TYPE_SFIXED32: "sfixed32",
    _Field.TYPE_SFIXED64: "sfixed64",
    _Field.TYPE_SINT32: "sint32",
    _Field.TYPE_SINT64: "sint64",
}
_INDENT = "  "


def describe(symbol: Symbol) -> str:
    """``NAME is a KIND:`` and `symbol` as ``.proto`` text, ending in a newline."""
    file = descriptor_pb2.FileDescriptorProto()
    _file_of(symbol).CopyToProto(file)
    proto3 = file.syntax == "proto3"
    if isinstance(symbol, ServiceDescriptor):
        kind, lines = "a service", _service(_find_service(file, symbol.name))
    elif isinstance(symbol, MethodDescriptor):
        service = _find_service(file, symbol.containing_service.name)
        method = next(item for item in service.method if item.name == symbol.name)
        kind, lines = "a method", _method(method)
    elif isinstance(symbol, Descriptor):
        kind, lines = "a message", _message(_find_message(file, symbol), proto3)
    elif isinstance(symbol, EnumDescriptor):
        kind, lines = "an enum", _enum(_find_enum(file, symbol))
    else:
        assert symbol.containing_type is not None  # `Schema.find` finds message fields only
        owner = _find_message(file, symbol.containing_type)
        field = next(item for item in owner.field if item.name == symbol.name)
        kind, lines = "a field", [_field(field, owner, proto3)]
    return "\n".join([f"{symbol.full_name} is {kind}:", *lines]) + "\n"


def _file_of(symbol: Symbol) -> FileDescriptor:
    if isinstance(symbol, MethodDescriptor):
        return symbol.containing_service.file
    if isinstance(symbol, FieldDescriptor):
        assert symbol.containing_type is not None
        return symbol.containing_type.file
    return symbol.file


def _find_service(
    file: descriptor_pb2.FileDescriptorProto, name: str
) -> descriptor_pb2.ServiceDescriptorProto:
    return next(service for service in file.service if service.name == name)


def _find_message(
    file: descriptor_pb2.FileDescriptorProto, descriptor: Descriptor
) -> descriptor_pb2.DescriptorProto:
    path: list[str] = []
    current: Descriptor | None = descriptor
    while current is not None:
        path.insert(0, current.name)
        current = current.containing_type
    messages = file.message_type
    found = None
    for name in path:
        found = next(message for message in messages if message.name == name)
        messages = found.nested_type
    assert found is not None
    return found


def _find_enum(
    file: descriptor_pb2.FileDescriptorProto, descriptor: EnumDescriptor
) -> descriptor_pb2.EnumDescriptorProto:
    owner = descriptor.containing_type
    enums = file.enum_type if owner is None else _find_message(file, owner).enum_type
    return next(enum for enum in enums if enum.name == descriptor.name)


def _option_lines(options: Any, extension: Any, name: str) -> list[str]:
    """``option deprecated = true;`` and Flare's option `name`, where set."""
    lines = []
    if getattr(options, "deprecated", False):
        lines.append("option deprecated = true;")
    if options.HasExtension(extension):
        value: Message = options.Extensions[extension]
        text = text_format.MessageToString(value, as_one_line=True)
        lines.append(f"option (flare.options.v1.{name}) = {{ {text} }};")
    return lines


def _service(service: descriptor_pb2.ServiceDescriptorProto) -> list[str]:
    lines = [f"service {service.name} {{"]
    lines += [
        _INDENT + line for line in _option_lines(service.options, options_pb2.service, "service")
    ]
    for method in service.method:
        lines += [_INDENT + line for line in _method(method)]
    lines.append("}")
    return lines


def _method(method: descriptor_pb2.MethodDescriptorProto) -> list[str]:
    request = ("stream " if method.client_streaming else "") + method.input_type
    response = ("stream " if method.server_streaming else "") + method.output_type
    head = f"rpc {method.name} ( {request} ) returns ( {response} )"
    options = _option_lines(method.options, options_pb2.method, "method")
    if not options:
        return [f"{head};"]
    return [f"{head} {{", *(_INDENT + line for line in options), "}"]


def _message(message: descriptor_pb2.DescriptorProto, proto3: bool) -> list[str]:
    body = _option_lines(message.options, options_pb2.message, "message")
    shown_oneofs: set[int] = set()
    for field in message.field:
        # proto3 `optional` is a oneof of its own that the source does not spell.
        if not field.HasField("oneof_index") or (proto3 and field.proto3_optional):
            body.append(_field(field, message, proto3))
        elif field.oneof_index not in shown_oneofs:
            shown_oneofs.add(field.oneof_index)
            body.append(f"oneof {message.oneof_decl[field.oneof_index].name} {{")
            body += [
                _INDENT + _field(member, message, proto3)
                for member in message.field
                if member.HasField("oneof_index") and member.oneof_index == field.oneof_index
            ]
            body.append("}")
    for nested in message.nested_type:
        if not nested.options.map_entry:
            body += _message(nested, proto3)
    for enum in message.enum_type:
        body += _enum(enum)
    for reserved in message.reserved_range:
        last = reserved.end - 1  # the descriptor's end is exclusive
        body.append(f"reserved {reserved.start}{'' if last == reserved.start else f' to {last}'};")
    return [f"message {message.name} {{", *(_INDENT + line for line in body), "}"]


def _field(
    field: descriptor_pb2.FieldDescriptorProto,
    owner: descriptor_pb2.DescriptorProto,
    proto3: bool,
) -> str:
    entry = _map_entry(field, owner)
    if entry is not None:
        key, value = entry.field[0], entry.field[1]
        kind = f"map<{_type(key)}, {_type(value)}>"
    else:
        label = ""
        if field.label == _Field.LABEL_REPEATED:
            label = "repeated "
        elif field.label == _Field.LABEL_REQUIRED:
            label = "required "
        elif (proto3 and field.proto3_optional) or (
            not proto3 and not field.HasField("oneof_index")
        ):
            label = "optional "
        kind = label + _type(field)
    return f"{kind} {field.name} = {field.number};"


def _map_entry(
    field: descriptor_pb2.FieldDescriptorProto, owner: descriptor_pb2.DescriptorProto
) -> descriptor_pb2.DescriptorProto | None:
    if field.type != _Field.TYPE_MESSAGE or field.label != _Field.LABEL_REPEATED:
        return None
    name = field.type_name.rpartition(".")[2]
    for nested in owner.nested_type:
        if nested.name == name and nested.options.map_entry:
            return nested
    return None


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return _SCALARS.get(field.type, field.type_name)


def _enum(enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    lines = [f"enum {enum.name} {{"]
    lines += [f"{_INDENT}{value.name} = {value.number};" for value in enum.value]
    lines.append("}")
    return lines
