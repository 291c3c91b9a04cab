"""parse → render on arbitrary names: the output always parses and never reuses a name.

Descriptors are built directly (no protoc), so hypothesis can try service and
method names protoc would accept: keywords, builtins, leading underscores,
case variants and names that collide with Flare's generated ones.
"""

from __future__ import annotations

import ast
import keyword

from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_codegen.parse import parse_files
from flare_codegen.render import render_file

TRICKY = [
    *keyword.kwlist,
    "print",
    "type",
    "object",
    "Route",
    "Service",
    "PushTypes",
    "PUSH_TYPES",
    "Channel",
    "abc",
    "Final",
    "_x",
    "__init__",
    "__x",
    "Send",
    "send",
    "SEND",
    "Chat_Service",
    "ChatService",
    "ChatServiceBase",
    "AllTransports",
    "Transport",
    "CallContext",
]
identifier = st.one_of(
    st.sampled_from(TRICKY),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
)


def _file(services: list[tuple[str, list[str]]]) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="p/v1/api.proto", package="p.v1")
    proto.message_type.add(name="M")
    for service_name, methods in services:
        service = proto.service.add(name=service_name)
        for index, method_name in enumerate(methods):
            service.method.add(
                name=method_name,
                input_type=".p.v1.M",
                output_type=".p.v1.M",
                client_streaming=index % 2 == 1,
                server_streaming=index % 4 >= 2,
            )
    return proto


def _unique(names: list[str]) -> bool:
    return len(names) == len(set(names))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(identifier, st.lists(identifier, max_size=6, unique=True)),
        min_size=1,
        max_size=4,
        unique_by=lambda service: service[0],
    )
)
def test_generated_module_parses_and_names_are_unique(
    services: list[tuple[str, list[str]]],
) -> None:
    result = parse_files([_file(services)], ["p/v1/api.proto"])
    assert result.diagnostics == ()
    (model,) = result.files
    tree = ast.parse(render_file(model))

    top_level: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            top_level.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top_level.append(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            top_level.extend(alias.asname or alias.name for alias in node.names)
    assert _unique(top_level), top_level

    for service in model.services:
        handlers = [method.handler_name for method in service.methods]
        constants = [method.constant_name for method in service.methods]
        assert _unique(handlers) and _unique(constants)
        for name in handlers:
            assert name.isidentifier() and not keyword.iskeyword(name)
            assert not name.startswith("_"), "private or dunder handler name"
        for name in (*constants, service.base_class, service.register_function):
            assert not name.startswith("__"), "would be name-mangled"
