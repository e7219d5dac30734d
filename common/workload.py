"""The scenario's workload as one effect generator, the same in both modes.

Theory of operation
-------------------
A workload is what a cloud's users do: RunInstances requests arriving over time, a
share of the launches taking a floating address after a delay, every launch terminated
after its drawn lifetime (its address given back first). ``Workload.run()`` yields
effects and nothing else, so the sim and the real runner drive the very same requests:

- ``Sleep`` between arrivals and until a launch's next step (scenario seconds; the
  real runner divides by ``real.time_scale``);
- ``ApiCall`` for every request. It enters at the EC2 request handler: in the sim the
  performer builds an ``HttpRequest`` and drives ``Ec2Api.handle`` in-process (signed
  or trusted, as the scenario says); in real mode it is a signed HTTP request to the
  API server. Either way the answer is the EC2 XML document a client would read;
- ``Fork`` starts one launch's steps as a task of its own (a SimPy process in the sim,
  a thread in real mode) and ``Join`` waits for all of them at the end.

Draws (gaps, project, instance type, lifetime, floating delay) come from the random
stream handed in, never from what the cloud answers, so both modes issue the same
requests for the same seed (``WORKLOAD_STREAM``).

Each answer is counted by action and outcome (``answers``) and timed (``latencies``, in
scenario seconds from the request to its answer), so both modes report the API the
same way (``api_summary``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.etree import ElementTree

from common.analysis.stats import percentile
from common.effects import ApiEffect, Now, Sleep, TaskEffect

#: The EC2 API version the workload speaks (2010-08-31, the API's own).
API_VERSION = "2010-08-31"
#: Project user names: one workload user per project, ``<project>-user``.
USER_SUFFIX = "-user"


def workload_user(project: str) -> str:
    return f"{project}{USER_SUFFIX}"


#: The name of the workload's random stream: both modes seed it as
#: ``random.Random(f"{seed}/{WORKLOAD_STREAM}")``, so a seed gives the same requests.
WORKLOAD_STREAM = "workload"


class Draws(Protocol):
    """The part of ``random.Random`` the workload uses (common/ does no I/O and
    imports no ``random``: the runner hands a seeded stream in)."""

    def random(self) -> float: ...
    def uniform(self, a: float, b: float) -> float: ...
    def expovariate(self, lambd: float) -> float: ...
    def lognormvariate(self, mu: float, sigma: float) -> float: ...
    def gauss(self, mu: float = ..., sigma: float = ...) -> float: ...
    def choices(self, population: Any, weights: Any = ..., *, cum_weights: Any = ..., k: int = ...) -> list: ...


# -- effects ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCall(ApiEffect):
    """One EC2 Query request by ``project``'s workload user; -> ``ApiAnswer``."""

    project: str
    action: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ApiAnswer:
    """What came back: the HTTP status and the XML body. ``failure`` names a transport
    failure (no answer at all: ``ConnectionFailed``, ``RequestTimeout``), with status 0."""

    status: int
    body: bytes = b""
    failure: str = ""


@dataclass(frozen=True)
class Fork(TaskEffect):
    """Start ``work`` (a generator of effects) as a task of its own; -> a handle for Join."""

    name: str
    work: Generator = field(repr=False, compare=False)


@dataclass(frozen=True)
class Join(TaskEffect):
    """Wait until every forked task in ``handles`` has ended; -> None."""

    handles: tuple = field(repr=False, compare=False)
    count: int = 0


# -- answers ----------------------------------------------------------------------


def _root(answer: ApiAnswer):
    try:
        return ElementTree.fromstring(answer.body)
    except ElementTree.ParseError:
        return None


#: The elements the workload reads, by local name (any namespace).
_READ = ("Code", "Message", "instanceId", "publicIp")


@dataclass(frozen=True)
class Reply:
    """What the workload reads from an answer, in one parse of its XML: ``outcome``
    ("" for success, else the EC2 error code or the transport failure's name), the first
    error ``message`` (else the failure's name), the instance ids and the public address."""

    outcome: str
    message: str = ""
    instance_ids: tuple[str, ...] = ()
    public_ip: str = ""


def _texts(root, body: bytes) -> dict[str, list[str]]:
    """The texts of the elements in _READ, by local name, in document order."""
    namespace = root.tag[:root.tag.rfind("}") + 1]
    if body.count(b"xmlns") == (1 if namespace else 0) and b"xmlns:" not in body:
        # No namespace, or one default namespace declared on the root and nowhere else
        # (what our API sends): every element is in the root's, so C can find them.
        return {name: [e.text or "" for e in root.iter(namespace + name)] for name in _READ}
    found: dict[str, list[str]] = {name: [] for name in _READ}
    for element in root.iter():
        tag = element.tag
        texts = found.get(tag[tag.rfind("}") + 1:])
        if texts is not None:
            texts.append(element.text or "")
    return found


def read(answer: ApiAnswer) -> Reply:
    """The ``Reply`` of ``answer``: its XML parsed once, its elements walked once."""
    root = _root(answer)
    if root is None:
        return Reply(answer.failure or "InvalidResponse", answer.failure)
    found = _texts(root, answer.body)
    if answer.failure:
        code = answer.failure
    elif answer.status != 200 or root.tag[root.tag.rfind("}") + 1:] == "Response":
        code = found["Code"][0] if found["Code"] else "Unknown"
    else:
        code = ""
    return Reply(code, found["Message"][0] if found["Message"] else answer.failure,
                 tuple(text for text in found["instanceId"] if text), found["publicIp"][0] if found["publicIp"] else "")


def outcome(answer: ApiAnswer) -> str:
    """"" for success, else the EC2 error code (or the transport failure's name)."""
    return answer.failure if answer.failure else read(answer).outcome


def error_message(answer: ApiAnswer) -> str:
    return read(answer).message


def instance_ids(answer: ApiAnswer) -> list[str]:
    return list(read(answer).instance_ids)


#: Distinct messages kept per (action, code); more are counted under OTHER_MESSAGES, so
#: a message carrying a changing value cannot grow the summary without bound.
MAX_MESSAGES_PER_CODE = 10
OTHER_MESSAGES = "(other messages)"

_INSTANCE_ID = re.compile(r"\bi-[0-9a-z]+")
_ADDRESS = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


def message_kind(message: str) -> str:
    """An error message with its instance ids and addresses folded, so that one reason
    is counted once: ``instance i-… is launching, not running``."""
    return _ADDRESS.sub("<address>", _INSTANCE_ID.sub("i-…", message))[:200]


def public_ip(answer: ApiAnswer) -> str:
    return read(answer).public_ip


def indexed(name: str, values) -> tuple[tuple[str, str], ...]:
    """EC2 list parameters: ``InstanceId.1=a&InstanceId.2=b``."""
    return tuple((f"{name}.{i}", str(v)) for i, v in enumerate(values, 1))


# -- the workload -----------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One RunInstances request as drawn: who, what, and when its later steps come."""

    index: int
    project: str
    instance_type: str
    lifetime: float | None
    floating_after: float | None


class Workload:
    """``run()`` issues the scenario's requests (module docstring). ``issued`` and
    ``finished`` count launches for progress reports; ``answers`` counts every answer
    by (action, outcome) and ``latencies`` times them by action."""

    def __init__(self, scenario, draws: Draws, requests: int | None = None):
        spec = scenario.workload
        self.spec = spec
        self.draws = draws
        self.total = requests or spec.requests
        self.image = spec.image or scenario.cloud.images[0]
        self.types = sorted(spec.instance_types.items())
        self.projects = sorted((spec.projects or {p.id: 1.0 for p in scenario.cloud.projects}).items())
        self.issued = 0
        self.finished = 0
        self.answers: Counter = Counter()
        self.reasons: dict[tuple[str, str], Counter] = {}
        self.latencies: dict[str, list[float]] = {}

    def _pick(self, weighted):
        return self.draws.choices([name for name, _ in weighted], weights=[w for _, w in weighted])[0]

    def draw(self, index: int) -> tuple[float, Launch]:
        """The gap before request ``index`` and what it asks for; draws in a fixed order."""
        spec = self.spec
        rate = spec.arrivals.rate
        gap = 1.0 / rate if spec.arrivals.process == "constant" else self.draws.expovariate(rate)
        project = self._pick(self.projects)
        itype = self._pick(self.types)
        lifetime = spec.lifetime.sample(self.draws) if spec.lifetime is not None else None
        floating_after = None
        if spec.floating_ips and self.draws.random() < spec.floating_ips:
            floating_after = spec.floating_delay.sample(self.draws)
        return gap, Launch(index, project, itype, lifetime, floating_after)

    def run(self):
        """Issue every request, then wait until each launch has run its course."""
        tasks = []
        for index in range(self.total):
            gap, launch = self.draw(index)
            yield Sleep(gap)
            tasks.append((yield Fork(f"launch-{index}", self._launch(launch))))
            self.issued += 1
        yield Join(tuple(tasks), len(tasks))

    def call(self, project: str, action: str, params=()):
        """One request; -> the ``Reply`` read from its answer (counted and timed either way)."""
        started = yield Now()
        answer = yield ApiCall(project, action, tuple(params))
        finished = yield Now()
        reply = read(answer)
        code = reply.outcome
        self.answers[(action, code)] += 1
        if code:
            messages = self.reasons.setdefault((action, code), Counter())
            kind = message_kind(reply.message)
            if kind not in messages and len(messages) >= MAX_MESSAGES_PER_CODE:
                kind = OTHER_MESSAGES
            messages[kind] += 1
        self.latencies.setdefault(action, []).append(finished - started)
        return reply

    def _launch(self, launch: Launch):
        try:
            started = yield Now()
            n = str(self.spec.instances_per_request)
            reply = yield from self.call(launch.project, "RunInstances", (
                ("ImageId", self.image), ("InstanceType", launch.instance_type), ("MinCount", n), ("MaxCount", n)))
            ids = list(reply.instance_ids) if not reply.outcome else []
            if not ids:
                return  # refused: counted by outcome
            address = ""
            lifetime, floating_after = launch.lifetime, launch.floating_after
            if floating_after is not None and (lifetime is None or floating_after < lifetime):
                yield Sleep(floating_after)
                address = yield from self._take_address(launch.project, ids[0])
            if lifetime is None:
                return
            now = yield Now()
            yield Sleep(max(0.0, started + lifetime - now))
            if address:
                yield from self.call(launch.project, "DisassociateAddress", (("PublicIp", address),))
                yield from self.call(launch.project, "ReleaseAddress", (("PublicIp", address),))
            yield from self.call(launch.project, "TerminateInstances", indexed("InstanceId", ids))
        finally:
            self.finished += 1

    def _take_address(self, project: str, instance_id: str):
        """Allocate and associate a floating address; -> the address held, or ""."""
        reply = yield from self.call(project, "AllocateAddress")
        address = reply.public_ip if not reply.outcome else ""
        if not address:
            return ""
        reply = yield from self.call(project, "AssociateAddress", (("PublicIp", address), ("InstanceId", instance_id)))
        if reply.outcome:
            yield from self.call(project, "ReleaseAddress", (("PublicIp", address),))
            return ""
        return address

    def api_summary(self, wall_seconds: float | None = None) -> dict:
        """Requests by action (count, p50/p95 latency in scenario seconds) and every
        refusal by action and code: the ``api`` section of summary.json in both modes."""
        by_action = {}
        for action, seconds in sorted(self.latencies.items()):
            by_action[action] = {
                "count": len(seconds),
                "p50_s": percentile(seconds, 50),
                "p95_s": percentile(seconds, 95),
            }
        errors = {f"{action} {code}": n for (action, code), n in sorted(self.answers.items()) if code}
        reasons = {f"{action} {code}": dict(messages.most_common())
                   for (action, code), messages in sorted(self.reasons.items())}
        requests = sum(self.answers.values())
        summary: dict[str, Any] = {"requests": requests, "by_action": by_action, "errors": errors, "reasons": reasons}
        if wall_seconds:
            summary["workload_wall_seconds"] = wall_seconds
            summary["requests_per_second"] = requests / wall_seconds
        return summary
