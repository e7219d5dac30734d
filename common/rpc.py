"""RPC as in 2010: topics, the JSON envelope, ack policy and dispatch.

Every service consumes two queues on the topic exchange ``nova``: the shared topic
``T`` (all workers of the kind compete for it: before schedulers existed this was the
only scheduling) and its own ``T.<host>``. Only exact routing keys are bound.

The envelope is ``{"method": ..., "args": {...}, "_msg_id": ...}`` (``_msg_id`` only for
calls) plus the flattened ``_context_*`` keys. A reply is ``{"result": ..., "failure":
None or [exc_type, message]}``.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from common import context as ctx
from common.errors import PoisonMessage

EXCHANGE = "nova"

#: Bound on one message body: a message this big is a bug or an attack, not a request.
MAX_BODY_BYTES = 256 * 1024
#: Bound on bracket nesting in a body, checked before parsing: the JSON parser recurses
#: once per level, so a body of 200 KB of ``[`` exhausts the interpreter's stack and raises
#: RecursionError instead of ValueError. A real envelope is three levels deep
#: (envelope, args, one mapping or list value).
MAX_NESTING = 16

#: A server's reconnect backoff after its broker connection dropped (real.transport and
#: the sim's model of it, sim/services.py): fast enough that a brief drop costs ~0.1 s,
#: capped so a long outage costs one connection attempt per worker every 5 s. A server
#: never stops retrying (a service must come back after an outage of any length, as
#: 2010's fetch loop did); the cap bounds the rate of attempts and of log lines.
RECONNECT_BACKOFF_MIN = 0.1
RECONNECT_BACKOFF_MAX = 5.0


def persistent(durable: bool, call: bool) -> bool:
    """Does a message survive a broker restart? With durable delivery a cast does (it
    was accepted; nobody waits for it, so losing it would be silent); a call's request
    never does: its caller's reply address dies with the broker connection, so work
    replayed after a restart would answer nobody (the caller has already been told
    RpcTimeout, "may or may not have run")."""
    return durable and not call


def host_topic(topic: str, host: str) -> str:
    """The private queue of one worker: ``compute.host7``."""
    return f"{topic}.{host}"


class AckPolicy(enum.Enum):
    """When a consumer acknowledges a delivery.

    ``ON_RECEIPT``: before running the method (2010 and oslo.messaging): a crash
    mid-method loses the message, and the build timeout catches what it leaves behind.
    ``ON_COMPLETION``: after the method returns: a crash redelivers it, so the method
    must be idempotent.
    """

    ON_RECEIPT = "on_receipt"
    ON_COMPLETION = "on_completion"


#: The documented ack policy per method. Unlisted methods ack on receipt.
#: run_instance acks on receipt as in 2010: a redelivered spawn could double-boot on a
#: second host. terminate and reboot are idempotent by compare-and-set, so a crash
#: mid-way redelivers them rather than leaving an instance half-deleted; so does
#: cleanup_instance, which only destroys a domain no live record owns.
ACK_POLICY = {
    "run_instance": AckPolicy.ON_RECEIPT,
    "terminate_instance": AckPolicy.ON_COMPLETION,
    "reboot_instance": AckPolicy.ON_COMPLETION,
    "cleanup_instance": AckPolicy.ON_COMPLETION,
    "allocate_fixed_ip": AckPolicy.ON_RECEIPT,
}


def ack_policy(method: str) -> AckPolicy:
    return ACK_POLICY.get(method, AckPolicy.ON_RECEIPT)


def envelope(method: str, args: Mapping[str, Any], context=None, msg_id: str | None = None) -> dict:
    message = {"method": method, "args": dict(args)}
    if msg_id is not None:
        message["_msg_id"] = msg_id
    message.update(ctx.pack(context))
    return message


#: The wire form's encoder, made once: ``json.dumps`` with options builds one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode(message: dict) -> str:
    """The wire form. Raises PoisonMessage for what JSON cannot carry."""
    try:
        body = _ENCODER.encode(message)
    except (TypeError, ValueError) as e:
        raise PoisonMessage(f"message is not JSON-serialisable: {e}") from None
    if len(body) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message body is {len(body)} bytes, over {MAX_BODY_BYTES}")
    return body


def decode(body) -> dict:
    """Parse a body into an envelope dict. Raises PoisonMessage naming what is wrong,
    and nothing else: whatever a body holds, the worker that got it keeps serving."""
    if isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    elif isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
    else:
        raise PoisonMessage(f"message body is a {type(body).__name__}, not bytes or text")
    if len(raw) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message body is {len(raw)} bytes, over {MAX_BODY_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PoisonMessage("message body is not UTF-8") from None
    depth = nesting(text)
    if depth > MAX_NESTING:
        raise PoisonMessage(f"message body nests {depth} levels deep, over {MAX_NESTING}")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError, MemoryError) as e:
        raise PoisonMessage(f"message body is not JSON: {type(e).__name__}: {e}") from None
    if not isinstance(message, dict):
        raise PoisonMessage("message body is not a JSON object")
    return message


def nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings not counted
    (one pass, no recursion). Fast path: a text with few brackets cannot nest deeply."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    return deepest  # enough to refuse it; no need to read on
        elif char in "]}":
            depth -= 1
    return deepest


#: A topic a poison fault may name: a kind's shared topic or its N-th service's own queue.
POISON_TOPIC = r"^(compute|network|scheduler)(\.[1-9][0-9]{0,3})?$"


def poison_target(topic: str) -> tuple[str, int | None]:
    """``compute.2`` -> ("compute", 2); ``compute`` -> ("compute", None), the shared topic."""
    kind, _, position = topic.partition(".")
    return kind, int(position) if position else None


def poison_target_problem(topic: str, services: Mapping[str, int]) -> str | None:
    """Why a poison fault's ``topic`` names no queue of a cloud with ``services`` per kind, or None."""
    kind, position = poison_target(topic)
    if not services.get(kind) or (position or 1) > services[kind]:
        return f"poison {topic}: the cloud has {services.get(kind, 0)} {kind} services"
    return None


#: For ``badargs`` poison: a method of each service kind whose ``instance_id`` must be text.
_POISONED_METHOD = {"compute": "run_instance", "network": "allocate_fixed_ip", "scheduler": "run_instance"}


def poison_body(body: str, kind: str) -> bytes:
    """A poison message for a ``kind`` service's topic, as the fault plan injects it:
    ``nested`` (200 KB of brackets: deep enough to exhaust a recursive parser, under the
    body limit so the size check does not hide it), ``binary`` (not UTF-8), ``huge`` (over
    MAX_BODY_BYTES) or ``badargs`` (a valid envelope, ``instance_id`` a mapping)."""
    if body == "nested":
        return b"[" * (200 * 1024)
    if body == "binary":
        return b'{"method":"\xff\xfe' + bytes(range(128, 256)) + b'"}'
    if body == "huge":
        return encode_unchecked({"method": "run_instance", "args": {"pad": "x" * MAX_BODY_BYTES}})
    if body == "badargs":
        return encode_unchecked(envelope(_POISONED_METHOD[kind], {"instance_id": {"$ne": ""}}))
    raise ValueError(f"unknown poison body {body!r}: nested, binary, huge or badargs")


def encode_unchecked(message: dict) -> bytes:
    """The wire form without the body limit: only for building poison on purpose."""
    return _ENCODER.encode(message).encode("utf-8")


def reply(result=None, failure: BaseException | None = None) -> dict:
    if failure is None:
        return {"result": result, "failure": None}
    return {"result": None, "failure": [type(failure).__name__, str(failure)]}


class Parameter(typing.NamedTuple):
    """One declared parameter of an RPC method: the JSON types it may arrive as."""

    types: tuple[type, ...]
    required: bool


#: JSON value types accepted for each annotation an RPC parameter may carry. A float
#: parameter takes an int (JSON does not tell 3 from 3.0); bool is never an int here;
#: ``Any`` says "any JSON value" out loud.
_ACCEPTS: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,), dict: (dict,), list: (list,),
    type(None): (type(None),), Any: (object,),
}

#: manager class -> method -> parameter name -> Parameter: every RPC method's declared
#: parameters, derived once from its signature and annotations (the manager code is the
#: declaration, so the two cannot drift apart).
PARAMETERS: dict[type, dict[str, dict[str, Parameter]]] = {}


def declared_parameters(manager_class: Any) -> dict[str, dict[str, Parameter]]:
    """The parameter table of ``manager_class``'s ``rpc_methods`` (cached in PARAMETERS).
    Raises TypeError for an RPC parameter without a JSON-typed annotation: an undeclared
    parameter would let any value through to the handler."""
    table = PARAMETERS.get(manager_class)
    if table is not None:
        return table
    table = {}
    for method in sorted(manager_class.rpc_methods):
        func = getattr(manager_class, method)
        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters.values())[2:]  # self, context
        declared = {}
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise TypeError(f"{manager_class.__name__}.{method}: RPC parameters are named, not {param.kind}")
            declared[param.name] = Parameter(_json_types(manager_class, method, param.name, hints.get(param.name)),
                                             required=param.default is param.empty)
        table[method] = declared
    PARAMETERS[manager_class] = table
    return table


def _json_types(manager_class: type, method: str, name: str, annotation) -> tuple[type, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = typing.get_args(annotation)
    else:
        members = (annotation,)
    accepted: tuple[type, ...] = ()
    for member in members:
        member = typing.get_origin(member) or member  # dict[str, int] -> dict
        if member not in _ACCEPTS:
            raise TypeError(f"{manager_class.__name__}.{method}: parameter {name!r} needs a JSON type annotation "
                            f"(str, int, float, bool, dict, list, None or Any), got {annotation!r}")
        accepted += _ACCEPTS[member]
    return accepted


def check_arguments(manager_class: type, method: str, args: Mapping[str, Any]) -> None:
    """Raise PoisonMessage unless ``args`` fit ``method``'s declared parameters: none
    missing, none unknown, each of a declared type."""
    declared = declared_parameters(manager_class)[method]
    unknown = sorted(set(args) - set(declared))
    if unknown:
        raise PoisonMessage(f"bad arguments for {method!r}: unknown {', '.join(map(repr, unknown))}")
    missing = [name for name, param in declared.items() if param.required and name not in args]
    if missing:
        raise PoisonMessage(f"bad arguments for {method!r}: missing {', '.join(map(repr, missing))}")
    for name, value in args.items():
        accepted = declared[name].types
        if object in accepted:
            continue
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in accepted)
            raise PoisonMessage(f"bad arguments for {method!r}: {name!r} must be {wanted}, "
                                f"got {type(value).__name__}")


def dispatch(manager, message: dict):
    """Resolve a decoded envelope to ``(generator, msg_id)`` on ``manager``.

    Only methods the manager lists in ``rpc_methods`` are callable over RPC, and only
    with arguments that fit their declared parameters (checked before the handler runs,
    so a wrongly typed value never reaches the store half-way through a workflow).
    Raises PoisonMessage for a missing or unknown method or arguments that do not fit;
    the caller replies with that error and never requeues it.
    """
    msg_id = message.get("_msg_id")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise PoisonMessage(f"no method in message: {sorted(message)[:10]}")
    if method not in manager.rpc_methods:
        raise PoisonMessage(f"unknown method {method[:80]!r} for {type(manager).__name__}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise PoisonMessage(f"args of {method!r} is not an object")
    check_arguments(type(manager), method, args)
    context = ctx.unpack(message)
    return getattr(manager, method)(context, **args), msg_id
