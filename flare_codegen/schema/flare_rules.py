"""Flare's own breaking-change rules (category FLARE).

buf ignores custom options, so it cannot see the things a deployed Flare
client depends on beyond the protobuf wire format: WebSocket and QUIC frames
name a route by ``service_id << 16 | route_id``, clients retry and send 0-RTT
data only for idempotent routes, and they pick a transport and credentials
from the route's options. Each rule below guards one of those promises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2

from flare_codegen.model import (
    TRANSPORT_BY_OPTION,
    auth_from_option,
    resolve_auth,
    transports_when_unlisted,
)
from flare_codegen.schema.model import MESSAGE_OPTIONS, METHOD_OPTIONS, SERVICE_METHOD, FileInfo
from flare_codegen.schema.options import FlareExtensions, load_flare_options
from flare_codegen.schema.rules import Comparison, first_location, quote
from flare_runtime.routing import AuthRequirement, Transport

if TYPE_CHECKING:
    from flare.options.v1 import options_pb2

SERVICE_EXTENSION = 50100
METHOD_EXTENSION = 50101
MESSAGE_EXTENSION = 50102

FLARE_RULES: dict[str, str] = {
    "FLARE_SERVICE_ID_SAME": "a service keeps its service id",
    "FLARE_SERVICE_ID_NO_REUSE": "a service id once used never names another service",
    "FLARE_ROUTE_ID_SAME": "a method keeps its route id",
    "FLARE_ROUTE_NO_DELETE": "a route is deleted only with its route id reserved",
    "FLARE_ROUTE_ID_NO_REUSE": "a route id once used or reserved never names another method",
    "FLARE_RESERVED_ROUTE_ID_NO_DELETE": "reserved route ids stay reserved",
    "FLARE_ROUTE_SAME_CARDINALITY": "a route keeps its cardinality (unary or streaming sides)",
    "FLARE_ROUTE_IDEMPOTENT_NO_REMOVE": "an idempotent route stays idempotent",
    "FLARE_ROUTE_SAME_AUTH": "a route keeps its effective auth requirement and scopes",
    "FLARE_ROUTE_TRANSPORT_NO_REMOVE": "a route keeps every transport it was served on",
    "FLARE_PUSH_TYPE_ID_SAME": "a pushed message keeps its push type id",
    "FLARE_PUSH_TYPE_ID_NO_REUSE": "a push type id once used never names another message",
}


def _options() -> FlareExtensions:
    return load_flare_options()


def _service_options(service: descriptor_pb2.ServiceDescriptorProto) -> options_pb2.ServiceOptions:
    return service.options.Extensions[_options().service]


def _method_options(method: descriptor_pb2.MethodDescriptorProto) -> options_pb2.MethodOptions:
    return method.options.Extensions[_options().method]


def _message_options(message: descriptor_pb2.DescriptorProto) -> options_pb2.MessageOptions:
    return message.options.Extensions[_options().message]


def _is_flare_service(service: descriptor_pb2.ServiceDescriptorProto) -> bool:
    module = _options()
    options = service.options
    if options.HasExtension(module.service):
        return True
    return any(m.options.HasExtension(module.method) for m in service.method)


def _reserved(service: options_pb2.ServiceOptions) -> list[tuple[int, int]]:
    return [(r.start, r.end if r.end else r.start) for r in service.reserved_route_ids]


def _is_reserved(route_id: int, ranges: list[tuple[int, int]]) -> bool:
    return any(start <= route_id <= end for start, end in ranges)


def _cardinality(method: descriptor_pb2.MethodDescriptorProto) -> str:
    client, server = method.client_streaming, method.server_streaming
    if client and server:
        return "bidirectional streaming"
    if client:
        return "client streaming"
    if server:
        return "server streaming"
    return "unary"


def _auth(
    service: options_pb2.ServiceOptions, method: options_pb2.MethodOptions
) -> tuple[bool, tuple[str, ...]]:
    """(authenticated?, required scopes) exactly as generated code resolves them."""
    auth, scopes = resolve_auth(
        auth_from_option(method.auth),
        method.scopes,
        auth_from_option(service.default_auth),
        service.default_scopes,
    )
    return auth is AuthRequirement.AUTHENTICATED, tuple(sorted(scopes))


def _transports(
    service: options_pb2.ServiceOptions, method: options_pb2.MethodOptions
) -> frozenset[Transport]:
    """The transports the route is served on, exactly as generated code resolves them."""
    listed = method.transports or service.default_transports
    chosen = frozenset(TRANSPORT_BY_OPTION[t] for t in listed if t in TRANSPORT_BY_OPTION)
    return chosen or transports_when_unlisted(bool(service.service_id))


def _describe_auth(auth: tuple[bool, tuple[str, ...]]) -> str:
    authenticated, scopes = auth
    if scopes:
        return "authenticated with scopes " + ", ".join(quote(s) for s in scopes)
    return "authenticated" if authenticated else "no authentication"


def check_flare(c: Comparison) -> None:
    """Run every FLARE rule over the service and message pairs of `c`."""
    _check_services(c)
    _check_service_id_reuse(c)
    _check_push_types(c)


def _check_services(c: Comparison) -> None:
    out = c.out
    current_services = c.current.services
    for full_name, previous in c.previous.services.items():
        service = current_services.get(full_name)
        if service is None:
            continue  # buf's SERVICE_NO_DELETE / PACKAGE_SERVICE_NO_DELETE report this
        if not (_is_flare_service(previous.proto) or _is_flare_service(service.proto)):
            continue  # not a Flare service: no route ids, nothing of Flare's to break
        prev_opts, opts = _service_options(previous.proto), _service_options(service.proto)
        service_option_path = first_location(
            service.file, (*service.path, 3, SERVICE_EXTENSION), service.path
        )
        # 0 is "no id": a service gaining its first id broke no deployed client.
        if prev_opts.service_id and prev_opts.service_id != opts.service_id:
            out.add(
                "FLARE_SERVICE_ID_SAME",
                service.file,
                service_option_path,
                f"Service {quote(service.name)} changed service id from {prev_opts.service_id} "
                f"to {opts.service_id}; every deployed WebSocket and QUIC client addresses its "
                "routes by the old id.",
                against=previous.file,
            )
        reserved = _reserved(opts)
        for start, end in _reserved(prev_opts):
            missing = [i for i in (start, end) if not _is_reserved(i, reserved)]
            if missing:
                text = f"{start}" if start == end else f"{start}-{end}"
                out.add(
                    "FLARE_RESERVED_ROUTE_ID_NO_DELETE",
                    service.file,
                    service_option_path,
                    f"Service {quote(service.name)} no longer reserves route id(s) {text}.",
                    against=previous.file,
                )
        methods = {m.name: (i, m) for i, m in enumerate(service.proto.method)}
        current_ids = {_method_options(m).route_id: m.name for m in service.proto.method}
        previous_ids = {_method_options(m).route_id: m.name for m in previous.proto.method}
        for prev_method in previous.proto.method:
            prev_m = _method_options(prev_method)
            match = methods.get(prev_method.name)
            if match is None:
                if (
                    prev_m.route_id
                    and prev_m.route_id not in current_ids
                    and not _is_reserved(prev_m.route_id, reserved)
                ):
                    out.add(
                        "FLARE_ROUTE_NO_DELETE",
                        service.file,
                        service_option_path,
                        f"Method {quote(prev_method.name)} (route id {prev_m.route_id}) was "
                        f"deleted from service {quote(service.name)} without reserving its "
                        "route id in reserved_route_ids.",
                        against=previous.file,
                    )
                continue
            index, method = match
            m = _method_options(method)
            method_path = (*service.path, SERVICE_METHOD, index)
            option_path = first_location(
                service.file, (*method_path, METHOD_OPTIONS, METHOD_EXTENSION), method_path
            )

            def report(
                rule: str,
                text: str,
                path: tuple[int, ...] = option_path,
                file: FileInfo = service.file,
                against: FileInfo = previous.file,
            ) -> None:
                out.add(rule, file, path, text, against=against)

            where = f"Method {quote(method.name)} on service {quote(service.name)}"
            if prev_m.route_id and prev_m.route_id != m.route_id:
                report(
                    "FLARE_ROUTE_ID_SAME",
                    f"{where} changed route id from {prev_m.route_id} to {m.route_id}; deployed "
                    "WebSocket and QUIC clients still send the old id.",
                )
            if _cardinality(prev_method) != _cardinality(method):
                report(
                    "FLARE_ROUTE_SAME_CARDINALITY",
                    f"{where} changed from {_cardinality(prev_method)} to {_cardinality(method)}.",
                    method_path,
                )
            if prev_m.idempotent and not m.idempotent:
                report(
                    "FLARE_ROUTE_IDEMPOTENT_NO_REMOVE",
                    f"{where} is no longer idempotent; deployed clients would still retry it and "
                    "send it as QUIC 0-RTT early data, which can replay it.",
                )
            was_auth, now_auth = _auth(prev_opts, prev_m), _auth(opts, m)
            if was_auth != now_auth:
                looser = (not now_auth[0] and was_auth[0]) or set(now_auth[1]) < set(was_auth[1])
                direction = "loosened" if looser else "tightened"
                report(
                    "FLARE_ROUTE_SAME_AUTH",
                    f"{where} {direction} its auth requirement from {_describe_auth(was_auth)} "
                    f"to {_describe_auth(now_auth)}.",
                )
            lost = _transports(prev_opts, prev_m) - _transports(opts, m)
            if lost:
                names = ", ".join(t.value for t in Transport if t in lost)
                report(
                    "FLARE_ROUTE_TRANSPORT_NO_REMOVE",
                    f"{where} is no longer served over {names}.",
                )
        for route_id, name in current_ids.items():
            if not route_id:
                continue
            old_name = previous_ids.get(route_id)
            if old_name is not None and old_name != name:
                text = f"was used by method {quote(old_name)}"
            elif old_name is None and _is_reserved(route_id, _reserved(prev_opts)):
                text = "was reserved"
            else:
                continue
            index, _method = methods[name]
            method_path = (*service.path, SERVICE_METHOD, index)
            out.add(
                "FLARE_ROUTE_ID_NO_REUSE",
                service.file,
                first_location(
                    service.file, (*method_path, METHOD_OPTIONS, METHOD_EXTENSION), method_path
                ),
                f"Method {quote(name)} on service {quote(service.name)} uses route id {route_id}, "
                f"which {text}.",
                against=previous.file,
            )


def _check_service_id_reuse(c: Comparison) -> None:
    previous_owner = {
        _service_options(s.proto).service_id: name
        for name, s in c.previous.services.items()
        if _is_flare_service(s.proto)
    }
    for name, service in c.current.services.items():
        if not _is_flare_service(service.proto):
            continue
        service_id = _service_options(service.proto).service_id
        owner = previous_owner.get(service_id)
        if service_id and owner is not None and owner != name:
            c.out.add(
                "FLARE_SERVICE_ID_NO_REUSE",
                service.file,
                first_location(service.file, (*service.path, 3, SERVICE_EXTENSION), service.path),
                f"Service {quote(name)} uses service id {service_id}, which was used by "
                f"{quote(owner)}; deployed clients of {quote(owner)} would reach it.",
            )


def _check_push_types(c: Comparison) -> None:
    def push_ids(messages: dict[str, Any]) -> dict[int, str]:
        ids: dict[int, str] = {}
        for full_name, info in messages.items():
            if info.proto.HasField("options"):
                push_id = _message_options(info.proto).push_type_id
                if push_id:
                    ids[push_id] = full_name
        return ids

    previous_ids = push_ids(c.previous.messages)
    current_ids = push_ids(c.current.messages)
    previous_by_name = {name: push_id for push_id, name in previous_ids.items()}
    for push_id, full_name in current_ids.items():
        message = c.current.messages[full_name]
        path = first_location(
            message.file, (*message.path, MESSAGE_OPTIONS, MESSAGE_EXTENSION), message.path
        )
        old_owner = previous_ids.get(push_id)
        if old_owner is not None and old_owner != full_name:
            c.out.add(
                "FLARE_PUSH_TYPE_ID_NO_REUSE",
                message.file,
                path,
                f"Message {quote(full_name)} uses push type id {push_id}, which was used by "
                f"{quote(old_owner)}; deployed clients would decode pushes as the wrong type.",
            )
    for full_name, old_id in previous_by_name.items():
        kept = c.current.messages.get(full_name)
        if kept is None:
            continue
        new_id = _message_options(kept.proto).push_type_id if kept.proto.HasField("options") else 0
        if new_id != old_id:
            path = first_location(
                kept.file, (*kept.path, MESSAGE_OPTIONS, MESSAGE_EXTENSION), kept.path
            )
            c.out.add(
                "FLARE_PUSH_TYPE_ID_SAME",
                kept.file,
                path,
                f"Message {quote(full_name)} changed push type id from {old_id} to {new_id}.",
                against=c.previous.messages[full_name].file,
            )
