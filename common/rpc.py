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
from collections.abc import Mapping
from typing import Any

from common import context as ctx
from common.errors import PoisonMessage

EXCHANGE = "nova"

#: Bound on one message body: a message this big is a bug or an attack, not a request.
MAX_BODY_BYTES = 256 * 1024


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


def encode(message: dict) -> str:
    """The wire form. Raises PoisonMessage for what JSON cannot carry."""
    try:
        body = json.dumps(message, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as e:
        raise PoisonMessage(f"message is not JSON-serialisable: {e}") from None
    if len(body) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message body is {len(body)} bytes, over {MAX_BODY_BYTES}")
    return body


def decode(body) -> dict:
    """Parse a body into an envelope dict. Raises PoisonMessage naming what is wrong."""
    raw = body if isinstance(body, (bytes, bytearray)) else body.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message body is {len(raw)} bytes, over {MAX_BODY_BYTES}")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PoisonMessage("message body is not UTF-8") from None
    try:
        message = json.loads(body)
    except ValueError as e:
        raise PoisonMessage(f"message body is not JSON: {e}") from None
    if not isinstance(message, dict):
        raise PoisonMessage("message body is not a JSON object")
    return message


def reply(result=None, failure: BaseException | None = None) -> dict:
    if failure is None:
        return {"result": result, "failure": None}
    return {"result": None, "failure": [type(failure).__name__, str(failure)]}


def dispatch(manager, message: dict):
    """Resolve a decoded envelope to ``(generator, msg_id)`` on ``manager``.

    Only methods the manager lists in ``rpc_methods`` are callable over RPC. Raises
    PoisonMessage for a missing or unknown method or arguments that do not fit; the
    caller replies with that error and never requeues it.
    """
    msg_id = message.get("_msg_id")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise PoisonMessage(f"no method in message: {sorted(message)}")
    if method not in manager.rpc_methods:
        raise PoisonMessage(f"unknown method {method!r} for {type(manager).__name__}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise PoisonMessage(f"args of {method!r} is not an object")
    context = ctx.unpack(message)
    func = getattr(manager, method)
    try:
        inspect.signature(func).bind(context, **args)
    except TypeError as e:
        raise PoisonMessage(f"bad arguments for {method!r}: {e}") from None
    return func(context, **args), msg_id
