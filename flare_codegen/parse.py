"""Descriptors + Flare options → the generator's model, with validation.

This stage is pure: it takes the `FileDescriptorProto` list protoc hands a
plugin (every file, dependencies first) and the names of the files to
generate, and returns `File` models plus `Diagnostic` errors located with the
files' SourceCodeInfo. Nothing here reads files or prints.

The Flare options module is imported at the top of this module: protobuf
decodes extension fields only when the extension is registered at parse time,
so callers must import this module before they parse a request or a
descriptor set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from flare.options.v1 import options_pb2
from google.protobuf import descriptor_pb2

from flare_codegen.model import (
    AUTH_BY_OPTION,
    FLARE_WIRE_TRANSPORTS,
    TRANSPORT_BY_OPTION,
    Diagnostic,
    File,
    Location,
    MessageRef,
    Method,
    MethodOptions,
    Push,
    Service,
    auth_from_option,
    resolve_auth,
    transports_when_unlisted,
)
from flare_codegen.names import (
    NameScope,
    flare_output_path,
    is_python_keyword,
    pb2_module,
    push_constant_name,
    python_method_name,
    snake_case,
    upper_snake_case,
)
from flare_codegen.parameters import Parameters
from flare_runtime.routing import AuthRequirement, Cardinality, Transport

# Field numbers used in SourceCodeInfo paths (descriptor.proto).
_FILE_MESSAGE_TYPE = 4
_FILE_SERVICE = 6
_MESSAGE_NESTED_TYPE = 3
_MESSAGE_OPTIONS = 7
_SERVICE_METHOD = 2
_SERVICE_OPTIONS = 3
_METHOD_OPTIONS = 4
_METHOD_CLIENT_STREAMING = 5

SERVICE_OPTION = options_pb2.service.number
METHOD_OPTION = options_pb2.method.number
MESSAGE_OPTION = options_pb2.message.number

MAX_SERVICE_ID = 0xFEFF
"""Service ids 0xFF00-0xFFFF are reserved for Flare itself."""
MAX_FLARE_SERVICE_ID = 0xFFFF
"""The highest service id of Flare's own services (package ``flare`` and below)."""
MAX_ROUTE_ID = 0xFFFF
MAX_PUSH_TYPE_ID = 0xFFFF


# Top-level names every generated module defines besides the per-service ones.
FILE_LEVEL_NAMES: tuple[str, ...] = ("PUSH_TYPES",)


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Models of the files to generate, or the errors that prevent it."""

    files: tuple[File, ...]
    diagnostics: tuple[Diagnostic, ...]


class _Locator:
    """Looks up SourceCodeInfo spans and comments for one file.

    The index is built on first use: a file with nothing to generate and
    nothing wrong never pays for it (googleapis files carry thousands of
    locations each).
    """

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.file = proto.name
        self._proto = proto
        self._spans: dict[tuple[int, ...], Sequence[int]] | None = None
        self._comments: dict[tuple[int, ...], str] = {}

    def _index(self) -> dict[tuple[int, ...], Sequence[int]]:
        if self._spans is None:
            self._spans = {}
            for location in self._proto.source_code_info.location:
                path = tuple(location.path)
                self._spans[path] = location.span
                text = location.leading_comments or location.trailing_comments
                if text:
                    self._comments[path] = text
        return self._spans

    def at(self, *paths: Sequence[int]) -> Location:
        """The location of the first path (most specific first) that has one."""
        spans = self._index()
        for path in paths:
            span = spans.get(tuple(path))
            if span:
                return Location(self.file, span[0] + 1, span[1] + 1)
        return Location(self.file)

    def doc(self, path: Sequence[int]) -> str:
        """The element's comment, dedented, without surrounding blank lines."""
        self._index()
        return clean_comment(self._comments.get(tuple(path), ""))


def clean_comment(text: str) -> str:
    """Normalise a protoc comment: tabs expanded, common indent and edge blank lines removed."""
    lines = [line.rstrip() for line in text.expandtabs(8).split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indents = [len(line) - len(line.lstrip()) for line in lines if line]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines)


def _walk_messages(
    messages: Iterable[descriptor_pb2.DescriptorProto],
    prefix: str,
    qualprefix: tuple[str, ...],
    path: tuple[int, ...],
) -> Iterator[tuple[str, tuple[str, ...], tuple[int, ...], descriptor_pb2.DescriptorProto]]:
    field = _FILE_MESSAGE_TYPE if not qualprefix else _MESSAGE_NESTED_TYPE
    for index, message in enumerate(messages):
        full_name = f"{prefix}.{message.name}" if prefix else message.name
        qualname = (*qualprefix, message.name)
        message_path = (*path, field, index)
        yield full_name, qualname, message_path, message
        if message.options.map_entry:
            continue
        yield from _walk_messages(message.nested_type, full_name, qualname, message_path)


class _Parser:
    def __init__(
        self,
        files: Sequence[descriptor_pb2.FileDescriptorProto],
        targets: Sequence[str],
        parameters: Parameters,
    ) -> None:
        self.files = {proto.name: proto for proto in files}
        self.targets = [self.files[name] for name in targets if name in self.files]
        self.parameters = parameters
        self.diagnostics: list[Diagnostic] = []
        self.messages: dict[str, MessageRef] = {}
        self.keyword_messages: set[str] = set()
        # Push messages per file: (full name, SourceCodeInfo path, push type id).
        self.pushes: dict[str, list[tuple[str, tuple[int, ...], int]]] = {}
        self._locators: dict[str, _Locator] = {}
        for proto in files:
            module = pb2_module(proto.name)
            pushes = self.pushes[proto.name] = []
            for full_name, qualname, path, message in _walk_messages(
                proto.message_type, proto.package, (), ()
            ):
                self.messages[full_name] = MessageRef(
                    full_name=full_name, module=module, qualname=".".join(qualname)
                )
                if any(is_python_keyword(part) for part in qualname):
                    self.keyword_messages.add(full_name)
                if message.options.HasExtension(options_pb2.message):
                    type_id = message.options.Extensions[options_pb2.message].push_type_id
                    if type_id:
                        pushes.append((full_name, path, type_id))

    def locator(self, proto: descriptor_pb2.FileDescriptorProto) -> _Locator:
        locator = self._locators.get(proto.name)
        if locator is None:
            locator = self._locators[proto.name] = _Locator(proto)
        return locator

    def error(self, location: Location, message: str) -> None:
        self.diagnostics.append(Diagnostic(location, message))

    def run(self) -> ParseResult:
        self._check_unique_service_ids()
        self._check_unique_push_ids()
        models: list[File] = []
        for proto in self.targets:
            if proto.service or self.pushes[proto.name] or self.parameters.emit_empty:
                models.append(self._file(proto))
        ordered = sorted(
            set(self.diagnostics),
            key=lambda d: (d.location.file, d.location.line, d.location.column, d.message),
        )
        return ParseResult(tuple(models), tuple(ordered))

    # Request-wide checks -------------------------------------------------

    def _check_unique_service_ids(self) -> None:
        seen: dict[int, str] = {}
        target_names = {proto.name for proto in self.targets}
        for proto in self.files.values():
            for index, service in enumerate(proto.service):
                if not service.options.HasExtension(options_pb2.service):
                    continue
                service_id = service.options.Extensions[options_pb2.service].service_id
                if service_id == 0:
                    continue
                full_name = _qualify(proto.package, service.name)
                other = seen.setdefault(service_id, full_name)
                if other != full_name and proto.name in target_names:
                    path = (_FILE_SERVICE, index, _SERVICE_OPTIONS)
                    self.error(
                        self.locator(proto).at((*path, SERVICE_OPTION, 1), (*path, SERVICE_OPTION)),
                        f"service {full_name} reuses service_id {service_id} of {other}",
                    )

    def _check_unique_push_ids(self) -> None:
        seen: dict[int, str] = {}
        target_names = {proto.name for proto in self.targets}
        for proto in self.files.values():
            for full_name, path, type_id in self.pushes[proto.name]:
                other = seen.setdefault(type_id, full_name)
                if other != full_name and proto.name in target_names:
                    options_path = (*path, _MESSAGE_OPTIONS)
                    self.error(
                        self.locator(proto).at(
                            (*options_path, MESSAGE_OPTION, 1), (*options_path, MESSAGE_OPTION)
                        ),
                        f"message {full_name} reuses push_type_id {type_id} of {other}",
                    )

    # One file --------------------------------------------------------------

    def _file(self, proto: descriptor_pb2.FileDescriptorProto) -> File:
        locator = self.locator(proto)
        scope = NameScope(FILE_LEVEL_NAMES)
        services = tuple(
            self._service(proto, locator, scope, index, service)
            for index, service in enumerate(proto.service)
        )
        pushes: list[tuple[int, MessageRef, Location]] = []
        for full_name, path, type_id in self.pushes[proto.name]:
            options_path = (*path, _MESSAGE_OPTIONS)
            location = locator.at(
                (*options_path, MESSAGE_OPTION, 1), (*options_path, MESSAGE_OPTION), path
            )
            if type_id > MAX_PUSH_TYPE_ID:
                self.error(
                    location,
                    f"push_type_id {type_id} of {full_name} is out of range 1-{MAX_PUSH_TYPE_ID}",
                )
                continue
            pushes.append((type_id, self._message(full_name, location), location))
        pushes.sort(key=lambda push: push[0])
        # Claimed after the services' names, in type id order: deterministic.
        named = tuple(
            Push(type_id, message, location, scope.claim(push_constant_name(message.qualname)))
            for type_id, message, location in pushes
        )
        return File(
            proto_path=proto.name,
            package=proto.package,
            output_path=flare_output_path(proto.name),
            services=services,
            pushes=named,
        )

    def _message(self, type_name: str, location: Location) -> MessageRef:
        full_name = type_name.removeprefix(".")
        ref = self.messages.get(full_name)
        if ref is None:
            # protoc resolves every type before calling plugins; this only
            # happens with a hand-built descriptor set missing a dependency.
            self.error(location, f"message {full_name} is not defined in the input")
            return MessageRef(full_name, "", full_name)
        parts = ref.module.split(".")
        if any(is_python_keyword(part) for part in parts):
            self.error(
                location,
                f"message {full_name} lives in module {ref.module}, whose path has a "
                "Python keyword; generated code cannot import it",
            )
        elif not all(part.isidentifier() for part in parts):
            # A file or directory name starting with a digit, or a dotted
            # directory (`v1.2/`), gives `from v1 import 1api_pb2`: a syntax error.
            self.error(
                location,
                f"message {full_name} lives in module {ref.module}, which is not a "
                "Python module path; generated code cannot import it",
            )
        elif full_name in self.keyword_messages:
            self.error(
                location,
                f"message {full_name} has a Python keyword in its name; "
                "generated code cannot refer to it",
            )
        return ref

    def _service(
        self,
        proto: descriptor_pb2.FileDescriptorProto,
        locator: _Locator,
        scope: NameScope,
        index: int,
        service: descriptor_pb2.ServiceDescriptorProto,
    ) -> Service:
        path = (_FILE_SERVICE, index)
        options_path = (*path, _SERVICE_OPTIONS, SERVICE_OPTION)
        location = locator.at(path)
        full_name = _qualify(proto.package, service.name)
        flare = service.options.Extensions[options_pb2.service]
        service_id = flare.service_id

        def option_location(field: int) -> Location:
            return locator.at((*options_path, field), options_path, path)

        if service_id > MAX_SERVICE_ID and not (
            _is_flare_package(proto.package) and service_id <= MAX_FLARE_SERVICE_ID
        ):
            self.error(
                option_location(1),
                f"service_id {service_id} of {full_name} is out of range 1-{MAX_SERVICE_ID} "
                f"(65280-65535 are reserved for Flare)",
            )
        if service_id == 0 and self.parameters.require_ids:
            self.error(location, f"service {full_name} has no Flare service_id (require_ids)")

        default_transports = self._transports(
            flare.default_transports, option_location(4), f"service {full_name}"
        )
        reserved: list[tuple[int, int]] = []
        for item in flare.reserved_route_ids:
            end = item.end or item.start
            if item.start == 0 or end < item.start or end > MAX_ROUTE_ID:
                self.error(
                    option_location(5),
                    f"reserved route id range {item.start}-{end} of {full_name} is invalid "
                    f"(ids are 1-{MAX_ROUTE_ID}, start <= end)",
                )
                continue
            reserved.append((item.start, end))
        self._check_auth_number(
            flare.default_auth, option_location(2), f"service {full_name} sets default_auth"
        )
        # What a method that sets no auth option of its own gets.
        default_auth, _ = resolve_auth(
            None, (), auth_from_option(flare.default_auth), flare.default_scopes
        )

        # The client keeps its channel in `_channel`; every other name a
        # handler or client method could shadow is a dunder, escaped below.
        names = NameScope({"_channel"})
        constants = NameScope()
        methods: list[Method] = []
        seen_routes: dict[int, str] = {}
        for method_index, method in enumerate(service.method):
            model = self._method(
                locator,
                (*path, _SERVICE_METHOD, method_index),
                full_name,
                service_id,
                method,
                default_auth=default_auth,
                default_scopes=tuple(flare.default_scopes),
                default_transports=default_transports,
                service_deprecated=bool(flare.deprecation_note) or service.options.deprecated,
                service_deprecation_note=flare.deprecation_note,
                names=names,
                constants=constants,
            )
            methods.append(model)
            if model.route_id:
                route_location = locator.at(
                    (*path, _SERVICE_METHOD, method_index, _METHOD_OPTIONS, METHOD_OPTION, 1),
                    (*path, _SERVICE_METHOD, method_index, _METHOD_OPTIONS, METHOD_OPTION),
                    (*path, _SERVICE_METHOD, method_index),
                )
                other = seen_routes.setdefault(model.route_id, method.name)
                if other != method.name:
                    self.error(
                        route_location,
                        f"route_id {model.route_id} of {full_name}.{method.name} "
                        f"is already used by {full_name}.{other}",
                    )
                for start, end in reserved:
                    if start <= model.route_id <= end:
                        self.error(
                            route_location,
                            f"route_id {model.route_id} of {full_name}.{method.name} is reserved "
                            f"(reserved_route_ids {start}-{end}); removed methods' ids "
                            "are never reused",
                        )

        # A leading underscore would make the names private, and a double one
        # would be name-mangled inside the generated classes.
        base_name = f"Service{service.name}" if service.name.startswith("_") else service.name
        return Service(
            name=service.name,
            full_name=full_name,
            service_id=service_id,
            methods=tuple(methods),
            reserved_route_ids=tuple(reserved),
            deprecation_note=flare.deprecation_note,
            doc=locator.doc(path),
            location=location,
            base_class=scope.claim(f"{base_name}Base"),
            routes_class=scope.claim(f"{base_name}Routes"),
            client_class=scope.claim(f"{base_name}Client"),
            table_constant=scope.claim(upper_snake_case(base_name)),
            register_function=scope.claim(f"register_{snake_case(base_name)}"),
        )

    def _method(
        self,
        locator: _Locator,
        path: tuple[int, ...],
        service_name: str,
        service_id: int,
        method: descriptor_pb2.MethodDescriptorProto,
        *,
        default_auth: AuthRequirement,
        default_scopes: tuple[str, ...],
        default_transports: frozenset[Transport],
        service_deprecated: bool,
        service_deprecation_note: str,
        names: NameScope,
        constants: NameScope,
    ) -> Method:
        options_path = (*path, _METHOD_OPTIONS, METHOD_OPTION)
        location = locator.at(path)
        label = f"{service_name}.{method.name}"

        def option_location(field: int) -> Location:
            return locator.at((*options_path, field), options_path, path)

        flare = method.options.Extensions[options_pb2.method]
        cardinality = _cardinality(method)
        route_id = flare.route_id
        if route_id > MAX_ROUTE_ID:
            self.error(
                option_location(1),
                f"route_id {route_id} of {label} is out of range 1-{MAX_ROUTE_ID}",
            )
            route_id = 0
        if route_id and not service_id:
            self.error(
                option_location(1),
                f"{label} sets route_id {route_id} but service {service_name} has no service_id",
            )
        if service_id and not route_id and self.parameters.require_ids:
            self.error(location, f"{label} has no Flare route_id (require_ids)")

        if flare.idempotent and cardinality.client_streams:
            kind = "client-streaming" if cardinality is Cardinality.CLIENT_STREAM else "bidi"
            self.error(
                option_location(2),
                f"{label} is {kind}; idempotent is only allowed on unary and "
                "server-streaming methods (a request stream cannot be replayed safely)",
            )

        transports = self._transports(flare.transports, option_location(6), label)
        has_ids = bool(service_id and route_id)
        if transports and default_transports:
            outside = transports - default_transports
            if outside:
                self.error(
                    option_location(6),
                    f"{label} lists {_names(outside)} but service {service_name} "
                    f"is served on {_names(default_transports)} only",
                )
        # A service with a Flare id is served everywhere by default, so each of
        # its methods needs a route id unless it opts into gRPC only; a service
        # without one (e.g. googleapis) is plain gRPC.
        resolved_transports = (
            transports or default_transports or transports_when_unlisted(bool(service_id))
        )
        wire = resolved_transports & FLARE_WIRE_TRANSPORTS
        if wire and not has_ids:
            if service_id:
                missing = "it has no Flare route_id; add one"
            elif route_id:
                missing = f"service {service_name} has no Flare service_id; add one"
            else:
                missing = (
                    f"service {service_name} has no Flare service_id and {label} no "
                    "route_id; add them"
                )
            self.error(
                option_location(6) if transports else location,
                f"{label} may be served on {_names(wire)}, which carry routes by id, "
                f"but {missing} or restrict the method to TRANSPORT_GRPC",
            )

        self._check_auth_number(flare.auth, option_location(3), f"{label} sets auth")
        method_auth = auth_from_option(flare.auth)
        if method_auth is AuthRequirement.NONE and flare.scopes:
            self.error(
                option_location(4),
                f"{label} lists scopes but sets auth AUTH_REQUIREMENT_NONE",
            )
        auth, resolved_scopes = resolve_auth(
            method_auth, flare.scopes, default_auth, default_scopes
        )

        # A deprecated service deprecates every method; a method's own note wins.
        note = flare.deprecation_note or (service_deprecation_note if service_deprecated else "")
        deprecated = bool(note) or method.options.deprecated or service_deprecated
        handler_name = names.claim(python_method_name(method.name))
        return Method(
            name=method.name,
            path=f"/{service_name}/{method.name}",
            route_id=route_id if service_id else 0,
            cardinality=cardinality,
            request=self._message(method.input_type, location),
            response=self._message(method.output_type, location),
            options=MethodOptions(
                idempotent=flare.idempotent,
                auth=auth,
                scopes=resolved_scopes,
                default_timeout=(
                    flare.default_timeout_ms / 1000 if flare.default_timeout_ms else None
                ),
                transports=resolved_transports,
                max_message_bytes=flare.max_message_bytes or None,
                deprecated=deprecated,
                deprecation_note=note,
            ),
            handler_name=handler_name,
            constant_name=constants.claim(python_method_name(method.name).upper()),
            doc=locator.doc(path),
            location=location,
        )

    def _check_auth_number(self, value: int, location: Location, what: str) -> None:
        if value and value not in AUTH_BY_OPTION:
            self.error(
                location,
                f"{what} {value}, which is not an AuthRequirement "
                "(AUTH_REQUIREMENT_NONE or AUTH_REQUIREMENT_AUTHENTICATED)",
            )

    def _transports(
        self, values: Iterable[int], location: Location, owner: str
    ) -> frozenset[Transport]:
        result: set[Transport] = set()
        for value in values:
            transport = TRANSPORT_BY_OPTION.get(value)
            if transport is None:
                self.error(location, f"{owner} lists {_enum_name(value)}, which is not a transport")
                continue
            result.add(transport)
        return frozenset(result)


def _qualify(package: str, name: str) -> str:
    return f"{package}.{name}" if package else name


def _is_flare_package(package: str) -> bool:
    """True for Flare's own schemas (``flare.reflection.v1``...), which may use the reserved ids."""
    return package == "flare" or package.startswith("flare.")


def _cardinality(method: descriptor_pb2.MethodDescriptorProto) -> Cardinality:
    if method.client_streaming:
        return Cardinality.BIDI_STREAM if method.server_streaming else Cardinality.CLIENT_STREAM
    return Cardinality.SERVER_STREAM if method.server_streaming else Cardinality.UNARY


def _enum_name(value: int) -> str:
    try:
        return options_pb2.Transport.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def _names(transports: Iterable[Transport]) -> str:
    order = list(Transport)
    return ", ".join(f"TRANSPORT_{t.name}" for t in sorted(transports, key=order.index))


def parse_files(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
    targets: Sequence[str],
    parameters: Parameters | None = None,
) -> ParseResult:
    """Build models for `targets` (file names among `files`) and validate their options.

    `files` must hold every file the targets depend on, dependencies first,
    as in a CodeGeneratorRequest or a descriptor set built with
    ``--include_imports``. Errors are returned, not raised.
    """
    return _Parser(files, targets, parameters or Parameters()).run()
