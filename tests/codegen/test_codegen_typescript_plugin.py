"""``protoc-gen-flare-ts``'s shell, parameters and protoc-gen-es name rules, in process."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from flare_codegen.compiler import compile_protos
from flare_codegen.errors import ParameterError
from flare_codegen.typescript.es_names import file_schema_names, import_path
from flare_codegen.typescript.parameters import TsParameters, parse_ts_parameters
from flare_codegen.typescript.plugin import generate, run

ROOT = Path(__file__).resolve().parents[2]


def _request(parameter: str = "") -> plugin_pb2.CodeGeneratorRequest:
    compiled = compile_protos([ROOT / "schemas"], ["examples/chat/v1/chat.proto"])
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["examples/chat/v1/chat.proto"],
        parameter=parameter,
        proto_file=compiled.files.file,
    )


def test_parameters_parse_and_reject_unknown_names() -> None:
    assert parse_ts_parameters("") == TsParameters()
    parsed = parse_ts_parameters("import_extension=js, runtime=@acme/flare, require_ids")
    assert parsed == TsParameters(import_extension="js", runtime="@acme/flare", require_ids=True)
    for bad in ("line_length=90", "import_extension=mjs", "runtime=", "emit_empty=maybe", "a,a"):
        with pytest.raises(ParameterError):
            parse_ts_parameters(bad)


def test_a_bad_parameter_is_an_error_response_not_a_traceback() -> None:
    response = generate(_request("import_extension=cjs"))
    assert "import_extension" in response.error
    assert not response.file


def test_import_extension_and_runtime_reach_the_output() -> None:
    response = generate(_request("import_extension=js,runtime=@acme/flare"))
    assert not response.error
    [generated] = response.file
    assert generated.name == "examples/chat/v1/chat_flare.ts"
    assert 'from "./chat_pb.js";' in generated.content
    assert 'from "@acme/flare";' in generated.content


def test_undecodable_stdin_gets_an_error_response_and_status_1() -> None:
    stdout = io.BytesIO()
    assert run(io.BytesIO(b"\xff\xff not a request"), stdout) == 1
    response = plugin_pb2.CodeGeneratorResponse.FromString(stdout.getvalue())
    assert "cannot decode" in response.error


def test_the_entry_point_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flare_codegen.typescript", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("protoc-gen-flare-ts ")


def test_schema_names_follow_protoc_gen_es_clash_rules() -> None:
    # protoc-gen-es claims shape names first (Foo, FooSchema), then descriptor
    # names: Foo's schema would be FooSchema, already a shape, so it is FooSchema$.
    proto = descriptor_pb2.FileDescriptorProto(
        name="a/b.proto",
        package="p",
        message_type=[
            descriptor_pb2.DescriptorProto(
                name="Foo",
                nested_type=[descriptor_pb2.DescriptorProto(name="Inner")],
            ),
            descriptor_pb2.DescriptorProto(name="FooSchema"),
            descriptor_pb2.DescriptorProto(name="Object"),
        ],
    )
    assert file_schema_names(proto) == {
        "p.Foo": "FooSchema$",
        "p.Foo.Inner": "Foo_InnerSchema",
        "p.FooSchema": "FooSchemaSchema",
        "p.Object": "ObjectSchema",
    }


def test_import_paths_are_relative_and_wkt_come_from_the_runtime() -> None:
    assert import_path("a/b/c_flare.ts", "a/b/c.proto", "none") == "./c_pb"
    assert import_path("a/b/c_flare.ts", "a/x/d.proto", "js") == "../x/d_pb.js"
    assert import_path("c_flare.ts", "c.proto", "ts") == "./c_pb.ts"
    assert import_path("a/c_flare.ts", "google/protobuf/empty.proto", "js") == (
        "@bufbuild/protobuf/wkt"
    )
