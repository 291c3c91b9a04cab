"""``protoc-gen-flare``: the I/O shell around parse → model → render.

protoc writes a serialized ``CodeGeneratorRequest`` to stdin and reads a
``CodeGeneratorResponse`` from stdout. Every failure the user can cause (bad
options, unknown parameters, a corrupt request) is reported through
``CodeGeneratorResponse.error`` so protoc prints it and exits non-zero; this
module never lets a traceback escape.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import DecodeError

from flare_codegen import __version__
from flare_codegen.errors import ParameterError
from flare_codegen.parameters import parse_parameters

# Importing parse registers the Flare option extensions, which must happen
# before the request is parsed for the options to decode.
from flare_codegen.parse import parse_files
from flare_codegen.render import render_file

SUPPORTED_FEATURES = (
    plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    | plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
)
MINIMUM_EDITION = descriptor_pb2.EDITION_PROTO2
MAXIMUM_EDITION = descriptor_pb2.EDITION_2024


PROGRAM = "protoc-gen-flare"


def response(error: str | None = None) -> plugin_pb2.CodeGeneratorResponse:
    """An empty response declaring what Flare's plugins support, with `error` when given."""
    answer = plugin_pb2.CodeGeneratorResponse(
        supported_features=SUPPORTED_FEATURES,
        minimum_edition=MINIMUM_EDITION,
        maximum_edition=MAXIMUM_EDITION,
    )
    if error is not None:
        answer.error = error
    return answer


def request_problem(request: plugin_pb2.CodeGeneratorRequest) -> str | None:
    """Why `request` cannot be generated from before its files are parsed, or None."""
    if not request.file_to_generate:
        return "the request names no file to generate"
    known = {proto.name for proto in request.proto_file}
    missing = [name for name in request.file_to_generate if name not in known]
    if missing:
        return f"the request lacks the descriptor of {', '.join(missing)}"
    return None


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Turn a request into a response: generated files, or an error message.

    Pure apart from reading `request`; validation errors are joined one per
    line as ``file.proto:line:col: message``.
    """
    try:
        parameters = parse_parameters(request.parameter)
    except ParameterError as error:
        return response(str(error))
    problem = request_problem(request)
    if problem is not None:
        return response(problem)
    result = parse_files(request.proto_file, request.file_to_generate, parameters)
    if result.diagnostics:
        return response("\n".join(str(diagnostic) for diagnostic in result.diagnostics))
    answer = response()
    for model in result.files:
        content = render_file(model, parameters.line_length)
        answer.file.add(name=model.output_path, content=content)
    return answer


Generate = Callable[[plugin_pb2.CodeGeneratorRequest], plugin_pb2.CodeGeneratorResponse]
"""A plugin's pure half: request in, response (files or an error) out."""


def decode_request(data: bytes) -> plugin_pb2.CodeGeneratorRequest:
    """Parse stdin's bytes; raises `DecodeError` when they are not a request."""
    if not data:
        raise DecodeError("empty input: a protoc plugin reads a CodeGeneratorRequest on stdin")
    return plugin_pb2.CodeGeneratorRequest.FromString(data)


def serve(stdin: BinaryIO, stdout: BinaryIO, generate: Generate, program: str) -> int:
    """Read one request from `stdin`, write `generate`'s response to `stdout`; return the
    exit status (the I/O shell of ``protoc-gen-flare`` and ``protoc-gen-flare-ts``).

    A request that cannot be decoded still gets a response with ``error``
    set (protoc shows it) and the exit status is 1 (for a human at a
    terminal, who sees the message on stderr).
    """
    data = stdin.read()
    try:
        request = decode_request(data)
    except DecodeError as error:
        message = f"{program}: cannot decode the CodeGeneratorRequest on stdin: {error}"
        print(message, file=sys.stderr)
        stdout.write(response(message).SerializeToString())
        stdout.flush()
        return 1
    try:
        answer = generate(request)
    except Exception as error:  # last resort: report, never show a traceback
        answer = response(f"{program} {__version__}: internal error: {error!r}")
    stdout.write(answer.SerializeToString())
    stdout.flush()
    return 0


def plugin_main(program: str, protoc_example: str, generate: Generate) -> int:
    """A plugin's command line: ``--version``, a usage line for stray arguments, else `serve`
    on stdin/stdout."""
    if len(sys.argv) > 1 and sys.argv[1] in ("--version", "-V"):
        print(f"{program} {__version__}")
        return 0
    if len(sys.argv) > 1:
        print(
            f"usage: {program} < CodeGeneratorRequest > CodeGeneratorResponse\n"
            f"(run by protoc: {protoc_example})",
            file=sys.stderr,
        )
        return 2
    return serve(sys.stdin.buffer, sys.stdout.buffer, generate, program)


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``protoc-gen-flare`` on these streams (`serve` with `generate`)."""
    return serve(stdin, stdout, generate, PROGRAM)


def main() -> int:
    """Entry point of ``protoc-gen-flare`` and ``python -m flare_codegen``."""
    return plugin_main(PROGRAM, "protoc --flare_out=OUT_DIR ...", generate)


if __name__ == "__main__":
    sys.exit(main())
