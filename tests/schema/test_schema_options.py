"""Flare's options decode with or without the generated options module."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flare_codegen.schema.options import load_flare_options

SCHEMA = """\
syntax = "proto3";
import "flare/options/v1/options.proto";
message R {}
service S {
  option (flare.options.v1.service) = {service_id: 7};
  rpc M(R) returns (R) { option (flare.options.v1.method) = {route_id: 3, idempotent: true}; }
}
"""


def test_generated_module_registers_the_extensions() -> None:
    extensions = load_flare_options()
    assert (extensions.service.number, extensions.method.number, extensions.message.number) == (
        50100,
        50101,
        50102,
    )


def test_installed_without_generated_code_compiles_options_proto(tmp_path: Path) -> None:
    # A fresh interpreter that has never imported options_pb2, as in a wheel
    # that ships no generated/ folder.
    (tmp_path / "a.proto").write_text(SCHEMA)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from google.protobuf import descriptor_pool
        from flare_codegen.compiler import compile_directory
        from flare_codegen.schema.options import register_from_source

        assert "flare.options.v1.options_pb2" not in sys.modules
        register_from_source()
        pool = descriptor_pool.Default()
        service_ext = pool.FindExtensionByName("flare.options.v1.service")
        method_ext = pool.FindExtensionByName("flare.options.v1.method")
        files = compile_directory(Path({str(tmp_path)!r})).files.file
        [schema] = [f for f in files if f.name == "a.proto"]
        method = schema.service[0].method[0].options.Extensions[method_ext]
        print(schema.service[0].options.Extensions[service_ext].service_id,
              method.route_id, method.idempotent)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "3", "True"]
