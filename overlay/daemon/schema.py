"""Every stream-API op's arguments, written once (docs/api.md, "Ops").

``OPS`` maps each op to its ``OpSchema``: the arguments with their type,
whether they are required, their bounds and value checks.  Three readers
share it, so an op's arguments are described in one place:

- the API server validates every request against it before the op's
  handler runs (``validate``), answering ``bad_request`` (or the check's
  own code, e.g. ``invalid_peer_id``) with a message naming the argument;
- the CLI builds its argparse ``type=`` functions from the same checks
  (``cli_type``), so ``--limit``, ``--ttl`` and protocol IDs are bounded
  the same way on both sides;
- a test holds docs/api.md's op tables to it (tests/daemon/test_schema.py).

Handlers still interpret arguments that depend on each other (``addr`` or
``peer``, ``value`` or ``value_base64``) and check what needs the node's
state (a name's zone).  This module imports nothing of the subsystems, so
the CLI can use it without loading them; a test pins bounds copied from a
subsystem (the rendezvous TTL) to the subsystem's constant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from overlay.daemon.errors import BadRequest
from overlay.errors import InvalidMultiaddr, OverlayError

__all__ = [
    "Arg",
    "OpSchema",
    "OPS",
    "MAX_PROTOCOL_ID_LENGTH",
    "NAME_TTL_MAX",
    "PING_COUNT_MAX",
    "PING_INTERVAL_MAX_MS",
    "RENDEZVOUS_LIMIT_MAX",
    "RENDEZVOUS_TTL_MAX",
    "DISCOVER_LIMIT_DEFAULT",
    "check_protocol_id",
    "check_peer_id",
    "check_dial_target",
    "argparse_type",
    "cli_type",
    "validate",
    "value_of",
]

Kind = Literal["str", "int", "bool", "str_list"]
Check = Callable[[str], None]
"""Raises an ``OverlayError`` whose class names the API error code."""

MAX_PROTOCOL_ID_LENGTH = 256
NAME_TTL_MAX = 7 * 24 * 3600
"""Seconds a name record may be cached, at most (``ttl`` of ``name_*``)."""
RENDEZVOUS_TTL_MAX = 72 * 3600
"""``overlay.rendezvous.MAX_TTL``, which a test keeps equal."""
RENDEZVOUS_LIMIT_MAX = 1000
DISCOVER_LIMIT_DEFAULT = 100
PING_COUNT_MAX = 1000
"""``NodeOpsConfig.max_ping_count``'s default (a config may lower it)."""
PING_INTERVAL_MAX_MS = 60_000
"""``NodeOpsConfig.max_ping_interval_ms``'s default."""
_MAX_ID = (1 << 53) - 1


# -- value checks shared with the CLI ------------------------------------------


def check_protocol_id(text: str) -> None:
    if not text.startswith("/") or len(text) > MAX_PROTOCOL_ID_LENGTH or "\n" in text:
        raise BadRequest(f"{text!r} is not a protocol ID such as /echo/1.0.0")


def check_peer_id(text: str) -> None:
    from overlay.identity import PeerId  # the CLI imports this module before it needs keys

    PeerId.from_string(text)


def check_dial_target(text: str) -> None:
    """A multiaddr some transport dials: QUIC, or a relayed circuit."""
    from overlay.multiaddrs import dial_target_error

    error = dial_target_error(text)
    if error is not None:
        raise InvalidMultiaddr(error)


# -- the schema ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: Kind
    required: bool = False
    minimum: int | None = None
    """Bounds of an ``int``, inclusive."""
    maximum: int | None = None
    check: Check | None = None
    """Applied to a ``str`` and to each item of a ``str_list``."""
    max_items: int = 64
    """Of a ``str_list``."""
    default: Any = None
    """What the op uses when the argument is absent (``ApiCall.arg``)."""
    single_ok: bool = False
    """A ``str_list`` that also takes one bare string (``protocols``)."""

    def bounds_text(self) -> str:
        return f"{self.minimum} to {self.maximum}"


@dataclass(frozen=True, slots=True)
class OpSchema:
    args: tuple[Arg, ...] = ()
    closed: bool = False
    """Refuse arguments the op does not take (ops that answer only status
    say so instead of ignoring a misspelt option)."""
    by_name: Mapping[str, Arg] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {a.name: a for a in self.args})

    def arg(self, name: str) -> Arg:
        return self.by_name[name]


def _op(*args: Arg, closed: bool = False) -> OpSchema:
    return OpSchema(tuple(args), closed)


_NONE = OpSchema()
_PEER = Arg("peer", "str", check=check_peer_id)
_ADDR = Arg("addr", "str", check=check_dial_target)
_PROTOCOL = Arg("protocol", "str", required=True, check=check_protocol_id)
_NAME = Arg("name", "str", required=True)
_TARGETS = (
    Arg("peer", "str"),  # "self", "none" or a peer ID: the handler tells them apart
    Arg("addrs", "str_list", max_items=32),
    Arg("ips", "str_list", max_items=32),
    Arg("services", "str_list", max_items=32),
    Arg("txt", "str_list", max_items=32),
    Arg("ttl", "int", minimum=0, maximum=NAME_TTL_MAX),
)
_AT = Arg("at", "str")  # a peer ID or a multiaddr: the handler tells them apart

OPS: Mapping[str, OpSchema] = {
    # node (overlay/daemon/ops.py)
    "identity": _NONE,
    "listen_addrs": _NONE,
    "peers": _NONE,
    "connect": _op(Arg("addr", "str", required=True)),  # `/p2p/<id>` alone is allowed too
    "ping": _op(_ADDR, _PEER, Arg("count", "int", minimum=1, maximum=PING_COUNT_MAX),
                Arg("interval_ms", "int", minimum=0, maximum=PING_INTERVAL_MAX_MS)),
    "stream_open": _op(_ADDR, _PEER, Arg("protocols", "str_list", required=True,
                                         check=check_protocol_id, single_ok=True)),
    "stream_handler_register": _op(_PROTOCOL),
    "stream_accept": _op(Arg("stream_id", "int", required=True, minimum=1, maximum=_MAX_ID)),
    "stream_outcome": _op(Arg("pump_id", "str", required=True),
                          Arg("wait", "int", minimum=0, maximum=60, default=5)),
    # administration (ops_admin.py, ops_stats.py)
    "status": _NONE,
    "stop": _NONE,
    "disconnect": _op(Arg("peer", "str", required=True, check=check_peer_id)),
    "stats": _op(closed=True),
    # DHT (ops_dht.py)
    "dht_put": _op(Arg("value", "str"), Arg("value_base64", "str")),
    "dht_get": _op(Arg("key", "str"), Arg("key_base64", "str")),
    "dht_find_peer": _op(Arg("peer", "str", required=True, check=check_peer_id)),
    "dht_provide": _op(Arg("key", "str", required=True)),
    "dht_find_providers": _op(Arg("key", "str", required=True),
                              Arg("limit", "int", minimum=1, maximum=100, default=20)),
    "dht_table": _op(Arg("min_size", "int", minimum=0, maximum=1 << 16, default=0),
                     Arg("wait", "int", minimum=0, maximum=120, default=15)),
    # names (ops_name.py)
    "name_register": _op(_NAME, *_TARGETS),
    "name_update": _op(_NAME, *_TARGETS),
    "name_transfer": _op(_NAME, Arg("new_owner", "str", required=True, check=check_peer_id)),
    "name_release": _op(_NAME),
    "name_resolve": _op(_NAME, Arg("no_cache", "bool", default=False),
                        Arg("final", "bool", default=False)),
    "name_list": _NONE,
    "name_connect": _op(_NAME, _PROTOCOL),
    # NAT (overlay/nat, overlay/relay)
    "nat_status": _op(Arg("refresh", "bool", default=False)),
    "autonat_status": _NONE,
    "holepunch_status": _op(closed=True),
    "relay_status": _op(closed=True),
    "vip_status": _NONE,
    # rendezvous (overlay/rendezvous/daemon_ext.py)
    "rendezvous_register": _op(Arg("ns", "str", required=True),
                               Arg("ttl", "int", minimum=1, maximum=RENDEZVOUS_TTL_MAX), _AT),
    "rendezvous_unregister": _op(Arg("ns", "str", required=True), _AT),
    "rendezvous_discover": _op(Arg("ns", "str"),
                               Arg("limit", "int", minimum=1, maximum=RENDEZVOUS_LIMIT_MAX,
                                   default=DISCOVER_LIMIT_DEFAULT),
                               Arg("cookie", "str"), _AT),
    # services, forwards (overlay/apps/daemon_ext.py)
    "expose_add": _op(Arg("service", "str", required=True),
                      Arg("port", "int", required=True, minimum=1, maximum=65535),
                      Arg("host", "str"), Arg("allow", "str_list")),
    "expose_list": _NONE,
    "expose_remove": _op(Arg("service", "str", required=True)),
    "forward_add": _op(Arg("listen", "str", required=True), Arg("target", "str", required=True)),
    "forward_list": _NONE,
    "forward_close": _op(Arg("listen", "str", required=True)),
}


# -- validation ------------------------------------------------------------------


def value_of(op: str, name: str, args: Mapping[str, Any]) -> Any:
    """Argument ``name`` of a request ``validate`` passed, or its default."""
    value = args.get(name)
    if value is None:
        return OPS[op].arg(name).default
    return value


def validate(op: str, args: Mapping[str, Any]) -> None:
    """Check a request's arguments against ``OPS[op]``; an op without an
    entry (a test's own op) is left to its handler.  A ``null`` argument
    counts as absent, as the handlers always read it."""
    schema = OPS.get(op)
    if schema is None:
        return
    if schema.closed and args:
        raise BadRequest(f"{op} takes no arguments, got {sorted(args)}")
    for arg in schema.args:
        value = args.get(arg.name)
        if value is None:
            if arg.required:
                raise BadRequest(f"`{op}` needs the {_what(arg)} field `{arg.name}`")
            continue
        _check_value(arg, value)


def _what(arg: Arg) -> str:
    return {"str": "string", "int": "integer", "bool": "boolean", "str_list": "list"}[arg.kind]


def _check_value(arg: Arg, value: Any) -> None:
    name = arg.name
    if arg.kind == "str":
        if not isinstance(value, str):
            raise BadRequest(f"`{name}` must be a string")
        _apply(arg, value)
    elif arg.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"`{name}` must be an integer")
        if arg.minimum is not None and arg.maximum is not None \
                and not arg.minimum <= value <= arg.maximum:
            raise BadRequest(f"`{name}` must be between {arg.minimum} and {arg.maximum}")
    elif arg.kind == "bool":
        if not isinstance(value, bool):
            raise BadRequest(f"`{name}` must be true or false")
    elif arg.kind == "str_list":
        items = [value] if isinstance(value, str) and arg.single_ok else value
        if not isinstance(items, list):
            raise BadRequest(f"`{name}` must be a list")
        if len(items) > arg.max_items:
            raise BadRequest(f"`{name}` has more than {arg.max_items} entries")
        if not all(isinstance(item, str) for item in items):
            raise BadRequest(f"`{name}` must be a list of strings")
        for item in items:
            _apply(arg, item)


def _apply(arg: Arg, text: str) -> None:
    if arg.check is None:
        return
    try:
        arg.check(text)
    except BadRequest as exc:
        raise BadRequest(f"`{arg.name}`: {exc.message}", exc.code) from None


# -- the CLI's side -------------------------------------------------------------------


def cli_type(op: str, name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for the CLI option that fills ``OPS[op]``'s
    argument ``name``: an integer within its bounds, or a string passing
    its check; the error is argparse's one line."""
    arg = OPS[op].arg(name)

    def parse(text: str) -> Any:
        if arg.kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            if arg.minimum is not None and arg.maximum is not None \
                    and not arg.minimum <= value <= arg.maximum:
                raise argparse.ArgumentTypeError(
                    f"{value} is out of range: {arg.bounds_text()}")
            return value
        if arg.check is not None:
            return argparse_type(arg.check, name)(text)
        return text

    parse.__name__ = name  # argparse names the type in "invalid <name> value"
    return parse


def argparse_type(check: Check, name: str = "value") -> Callable[[str], str]:
    """An argparse ``type=`` from a value check, for CLI options that are
    not an op's argument but take the same kind of value (``--kad-protocol``)."""

    def parse(text: str) -> str:
        try:
            check(text)
        except (OverlayError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    parse.__name__ = name
    return parse
