"""RPC envelope, wire encoding, dispatch checks, ack policy, and errors that survive SimPy."""

import inspect
import json

import pytest
from records import flat
from scripted import step

from common import context as ctx
from common import errors, keys, rpc
from common.compute import ComputeManager
from common.context import RequestContext
from common.effects import HGetAll, SPop
from common.errors import PoisonMessage
from common.rpc import AckPolicy
from common.scheduler import SchedulerConfig, SchedulerManager

CTX = RequestContext("alice", "p1", request_id="req-1", timestamp=12.5, remote_address="10.1.2.3")
CONTEXT_KEYS = {f"_context_{name}" for name in ("user_id", "project_id", "is_admin", "request_id", "timestamp", "remote_address")}


def compute():
    return ComputeManager("h1", flat())


def scheduler_manager():
    return SchedulerManager(SchedulerConfig("simple", 8, 60.0), flat())


def test_envelope_of_a_call_has_method_args_msg_id_and_context():
    """A call's envelope: method, args, _msg_id and one _context_<field> per context field."""
    message = rpc.envelope("run_instance", {"instance_id": "i-1"}, CTX, msg_id="m-1")
    assert set(message) == {"method", "args", "_msg_id", *CONTEXT_KEYS}
    assert (message["method"], message["args"], message["_msg_id"]) == ("run_instance", {"instance_id": "i-1"}, "m-1")
    assert message["_context_project_id"] == "p1"


def test_envelope_of_a_cast_has_no_msg_id_and_no_context_when_none():
    """A cast carries no _msg_id; no context means no _context_* keys."""
    assert rpc.envelope("m", {}, None) == {"method": "m", "args": {}}


def test_envelope_copies_args():
    """Changing the caller's dict afterwards does not change the message."""
    args = {"instance_id": "i-1"}
    message = rpc.envelope("m", args)
    args["instance_id"] = "i-2"
    assert message["args"] == {"instance_id": "i-1"}


def test_host_topic():
    """A worker's private queue is <topic>.<host>."""
    assert rpc.host_topic("compute", "h7") == "compute.h7"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_encode_decode_round_trip(as_bytes):
    """decode(encode(m)) == m, from str or UTF-8 bytes, context unpacks to the same context."""
    message = rpc.envelope("run_instance", {"instance_id": "i-é"}, CTX, msg_id="m-1")
    body = rpc.encode(message)
    decoded = rpc.decode(body.encode() if as_bytes else body)
    assert decoded == message
    assert ctx.unpack(decoded) == CTX


def test_encode_rejects_what_json_cannot_carry():
    """A non-serialisable argument is a PoisonMessage at the sender."""
    with pytest.raises(PoisonMessage, match="not JSON-serialisable"):
        rpc.encode(rpc.envelope("m", {"x": object()}))


def test_encode_rejects_oversize():
    """A body over MAX_BODY_BYTES is refused at the sender."""
    with pytest.raises(PoisonMessage, match=f"over {rpc.MAX_BODY_BYTES}"):
        rpc.encode({"method": "m", "args": {"x": "a" * rpc.MAX_BODY_BYTES}})


@pytest.mark.parametrize(
    "body, message",
    [
        ("{not json", "message body is not JSON"),
        (b"\xff\xfe{}", "message body is not UTF-8"),
        ("[1, 2]", "message body is not a JSON object"),
        ('"method"', "message body is not a JSON object"),
        ("null", "message body is not a JSON object"),
        ("x" * (rpc.MAX_BODY_BYTES + 1), f"is {rpc.MAX_BODY_BYTES + 1} bytes, over {rpc.MAX_BODY_BYTES}"),
    ],
)
def test_decode_rejects_poison(body, message):
    """Each undecodable body is a PoisonMessage saying what is wrong with it."""
    with pytest.raises(PoisonMessage, match=message):
        rpc.decode(body)


@pytest.mark.parametrize(
    "body",
    [
        "[" * 200_000,  # the parser's recursion, not its syntax check, would fail first
        '{"method":"m","args":' + "[" * 1000 + "]" * 1000 + "}",
        '{"method":"m","n":' + "9" * 5000 + "}",  # past int()'s digit limit
        b"\x80\x81" * 10,
        "{" * 64,
    ],
    ids=["brackets-200k", "deep-args", "huge-int", "binary", "braces-64"],
)
def test_decode_turns_every_decoder_failure_into_poison(body):
    """Bodies that break the decoder itself (deep nesting, huge numbers, binary) are PoisonMessage, nothing else."""
    with pytest.raises(PoisonMessage):
        rpc.decode(body)


def test_decode_does_not_count_brackets_inside_strings():
    """Brackets inside a string value do not count as nesting."""
    body = json.dumps({"method": "m", "args": {"name": "[{" * 100}})
    assert rpc.decode(body)["args"]["name"] == "[{" * 100


def test_decode_accepts_exactly_the_limit():
    """A body of exactly MAX_BODY_BYTES is accepted."""
    padding = rpc.MAX_BODY_BYTES - len('{"method":"m","pad":""}')
    body = '{"method":"m","pad":"' + "a" * padding + '"}'
    assert len(body) == rpc.MAX_BODY_BYTES and rpc.decode(body)["method"] == "m"


def test_decode_limit_counts_bytes_not_characters():
    """A body over MAX_BODY_BYTES bytes but under it in characters (multi-byte UTF-8) is refused."""
    body = json.dumps({"method": "m", "pad": "é" * 140_000}, ensure_ascii=False).encode()
    assert len(body) > rpc.MAX_BODY_BYTES > len(body.decode())
    with pytest.raises(PoisonMessage, match="over"):
        rpc.decode(body)


def test_dispatch_resolves_to_the_managers_generator():
    """A good envelope gives the method's generator (not yet started) and the _msg_id."""
    gen, msg_id = rpc.dispatch(compute(), rpc.envelope("run_instance", {"instance_id": "i-1"}, CTX, "m-1"))
    assert inspect.isgenerator(gen) and msg_id == "m-1"
    assert step(gen) == HGetAll(keys.instance("i-1"))


def test_dispatch_of_a_cast_has_no_msg_id():
    """A cast (no _msg_id) dispatches with msg_id None."""
    manager = flat()
    gen, msg_id = rpc.dispatch(manager, rpc.envelope("allocate_fixed_ip", {"instance_id": "i-1"}))
    assert msg_id is None and step(gen) == SPop(keys.available("flat"))


@pytest.mark.parametrize(
    "message, problem",
    [
        ({"args": {}}, "no method in message"),
        ({"method": "", "args": {}}, "no method in message"),
        ({"method": 7, "args": {}}, "no method in message"),
        ({"method": "reboot", "args": {}}, "unknown method 'reboot' for ComputeManager"),
        ({"method": "__init__", "args": {"host": "h2", "network_manager": None}}, "unknown method '__init__'"),
        ({"method": "init_host", "args": {}}, "unknown method 'init_host'"),
        ({"method": "run_instance", "args": {}}, "bad arguments for 'run_instance'"),
        ({"method": "run_instance", "args": {"instance_id": "i-1", "force": True}}, "bad arguments for 'run_instance'"),
        ({"method": "run_instance", "args": {"instance_id": "i-1", "context": None}}, "bad arguments for 'run_instance'"),
        ({"method": "run_instance", "args": ["i-1"]}, "args of 'run_instance' is not an object"),
        ({"method": "run_instance", "args": {"instance_id": "i-1"}, "_context_user_id": "u"}, "bad request context"),
    ],
)
def test_dispatch_rejects_poison(message, problem):
    """Missing/unknown/non-RPC methods, misfitting args and a broken context are PoisonMessage."""
    with pytest.raises(PoisonMessage, match=problem):
        rpc.dispatch(compute(), message)


def test_dispatch_refuses_wrongly_typed_arguments_before_any_effect():
    """allocate_fixed_ip with a mapping for instance_id is refused before an address leaves the pool."""
    message = rpc.envelope("allocate_fixed_ip", {"instance_id": {"$ne": ""}})
    with pytest.raises(PoisonMessage, match="'instance_id' must be str, got dict"):
        rpc.dispatch(flat(), message)


@pytest.mark.parametrize(
    "args, problem",
    [
        ({"project_id": "p", "quota": "10"}, "'quota' must be int, got str"),
        ({"project_id": "p", "quota": True}, "'quota' must be int, got bool"),
        ({"project_id": ["p"], "quota": 1}, "'project_id' must be str, got list"),
        ({"project_id": "p"}, "missing 'quota'"),
    ],
)
def test_dispatch_checks_each_declared_parameter(args, problem):
    """Each argument is checked against its method's declared type; missing ones are named."""
    with pytest.raises(PoisonMessage, match=problem):
        rpc.dispatch(flat(), rpc.envelope("allocate_floating_ip", args))


def test_every_rpc_method_declares_json_typed_parameters():
    """The parameter table derives from the managers' annotations and covers every RPC method."""
    table = rpc.declared_parameters(type(flat()))
    assert set(table) == type(flat()).rpc_methods
    assert table["allocate_fixed_ip"]["instance_id"] == rpc.Parameter((str,), required=True)


def test_an_unannotated_rpc_parameter_is_refused_at_declaration():
    """A manager whose RPC method has an unannotated parameter cannot be served."""

    class Sloppy:
        rpc_methods = frozenset({"work"})

        def work(self, context, anything):
            yield None

    with pytest.raises(TypeError, match="'anything' needs a JSON type annotation"):
        rpc.declared_parameters(Sloppy)


def test_a_wrongly_typed_context_is_poison():
    """A context field of the wrong JSON type is refused."""
    message = {**rpc.envelope("run_instance", {"instance_id": "i-1"}, CTX), "_context_is_admin": "yes"}
    with pytest.raises(PoisonMessage, match="_context_is_admin is a str"):
        rpc.dispatch(compute(), message)


def test_ack_policy_table():
    """run_instance and allocate ack on receipt; terminate and reboot (idempotent) on completion."""
    assert rpc.ack_policy("run_instance") is AckPolicy.ON_RECEIPT
    assert rpc.ack_policy("allocate_fixed_ip") is AckPolicy.ON_RECEIPT
    assert rpc.ack_policy("terminate_instance") is AckPolicy.ON_COMPLETION
    assert rpc.ack_policy("reboot_instance") is AckPolicy.ON_COMPLETION
    assert rpc.ack_policy("no_such_method") is AckPolicy.ON_RECEIPT


def test_reply_forms():
    """A reply carries the result, or the failure as [class name, message]."""
    assert rpc.reply({"a": 1}) == {"result": {"a": 1}, "failure": None}
    assert rpc.reply(failure=errors.NotFound("no instance i-1")) == {"result": None, "failure": ["NotFound", "no instance i-1"]}


def test_context_pack_unpack_and_elevated():
    """The context flattens to _context_* keys and back; elevated() only sets is_admin."""
    assert ctx.unpack(ctx.pack(CTX)) == CTX
    assert ctx.pack(None) == {} and ctx.unpack({"method": "m"}) is None
    assert CTX.elevated() == RequestContext("alice", "p1", True, "req-1", 12.5, "10.1.2.3")


ERROR_CLASSES = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, BaseException) and c.__module__ == errors.__name__),
    key=lambda c: c.__name__,
)


def build(cls):
    """An instance of ``cls`` from the fewest positional string arguments it accepts."""
    for arity in range(1, 4):
        try:
            return cls(*(f"arg{k}" for k in range(arity)))
        except TypeError:
            continue
    raise AssertionError(f"{cls.__name__} cannot be built from positional arguments")


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_survives_simpy_reraise(cls):
    """type(e)(*e.args) gives an equal error: same class, args, message and attributes."""
    e = build(cls)
    again = type(e)(*e.args)
    assert (type(again), again.args, str(again), vars(again)) == (cls, e.args, str(e), vars(e))


def test_error_classes_are_found_and_have_codes():
    """The scan sees every error, and each NovaError has an EC2 code string."""
    assert {"NovaError", "RemoteError", "PoisonMessage", "UseYieldFrom"} <= {c.__name__ for c in ERROR_CLASSES}
    for cls in ERROR_CLASSES:
        if issubclass(cls, errors.NovaError):
            assert isinstance(cls.code, str) and cls.code


def test_remote_error_message_names_the_remote_class():
    """RemoteError reads as '<class>: <message>'."""
    assert str(errors.RemoteError("NoMoreAddresses", "pool empty")) == "NoMoreAddresses: pool empty"


@pytest.mark.parametrize("body", ["nested", "binary", "huge", "badargs"])
@pytest.mark.parametrize("kind", ["compute", "network", "scheduler"])
def test_every_injected_poison_body_is_refused_as_poison(body, kind):
    """Each body the fault plan injects is a PoisonMessage at decode or dispatch, for each kind's manager."""
    managers = {"compute": compute(), "network": flat(), "scheduler": scheduler_manager()}
    with pytest.raises(PoisonMessage):
        rpc.dispatch(managers[kind], rpc.decode(rpc.poison_body(body, kind)))
