"""Who performs effects: one ``typing.Protocol`` per effect family, and the table that
both runtimes dispatch through.

Theory of operation
-------------------
Each family of ``common.effects`` (a base class) has one Protocol here. A simulated
performer (a fake in ``sim/``) and a real adapter (in ``real/``) satisfy the same
Protocol, so a runtime is assembled by choosing, per family, which one performs it:
``runtime.register(HypervisorEffect, performer)``. That choice is per family, not per
mode, so a mixed run (real Redis and RabbitMQ, simulated hypervisors) is a different set
of ``register`` calls, not different code.

A simulated performer is a SimPy model: where the operation takes virtual time its
method returns a SimPy generator that returns the result (the sim runtime runs it with
``yield from``); a real one blocks and returns the result. ``Performed[T]`` is that
"T, or a generator returning T".

Each Protocol's docstring is its contract, in the manner of Nova's virt driver: what
every method returns and which ``NovaError`` it raises on failure. A performer raises
nothing else for an expected failure; anything else is a bug and ends the run. The
runtimes throw these errors into the manager at its ``yield``.

``PerformerTable`` is the registration table: a family maps to a performer (or to
``AgentsOwn``, "the agent's own one", for per-host drivers), a single effect type may
map to a plain function ``(agent, effect)``, and the most specific registration wins.
Lookups are cached per effect type, so dispatch is one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar, cast, runtime_checkable

from common.effects import (
    FAMILIES,
    ApiEffect,
    Batch,
    Call,
    Cast,
    DirectoryEffect,
    DomainSpec,
    Effect,
    FetchImage,
    HttpPost,
    HypervisorEffect,
    ImageEffect,
    KeyPairEffect,
    NetDriverEffect,
    RpcEffect,
    RuntimeEffect,
    StatObject,
    StoreCommand,
    StoreEffect,
    TaskEffect,
    Transaction,
    WebEffect,
)
from common.errors import NovaError

T = TypeVar("T")

#: A result, or (simulated performers) a SimPy generator that returns it.
Performed: TypeAlias = T | Generator[Any, Any, T]

#: What the table hands a runtime: ``handler(agent, effect)`` -> ``Performed[result]``.
Handler: TypeAlias = Callable[[Any, Any], Any]

#: Seconds to wait after the handler (sim only): a zero-argument draw, or None.
Latency: TypeAlias = Callable[[], float] | None


@runtime_checkable
class StorePerformer(Protocol):
    """Performs StoreEffect: Redis commands and guarded transactions.

    On failure: raises ``StoreUnavailable`` when the store cannot be reached or the
    connection broke mid-command (the command may or may not have been applied: callers
    treat the outcome as unknown). A command Redis itself rejects is a bug in the
    caller and is not turned into a NovaError.
    """

    def execute(self, command: StoreCommand) -> Any:
        """Run one command; -> its reply with the types SimStore gives (str, int,
        float, set, list, dict, None)."""
        ...

    def transaction(self, tx: Transaction) -> list[Any] | None:
        """Check every guard and run the ops atomically; -> their results, or None
        when a guard failed (nothing written)."""
        ...

    def batch(self, batch: Batch) -> list[Any]:
        """Run the ops in one round trip, in order, not atomically; -> their results.
        An op the store refuses does not stop the others; the first such error is
        raised after them."""
        ...


@runtime_checkable
class RpcPerformer(Protocol):
    """Performs RpcEffect: casts and calls between services (the runtime itself, or a
    transport it owns).

    On failure: ``Unroutable`` when no queue is bound to the topic (or the broker cannot
    be reached to publish), ``RpcTimeout`` when a call's reply did not come within its
    timeout (the callee may still have run), ``RemoteError`` carrying the callee's
    error class and message when the callee raised.
    """

    def cast(self, agent: Any, cast: Cast) -> Performed[None]:
        ...

    def call(self, agent: Any, call: Call) -> Performed[Any]:
        ...


@runtime_checkable
class HypervisorPerformer(Protocol):
    """Performs HypervisorEffect on one host's hypervisor.

    On failure: ``HypervisorError`` for anything the hypervisor refuses or that breaks
    (domain exists, no such domain to reboot, connection lost, boot failed), and its
    subclass ``InsufficientMemory`` when a spawn does not fit. A failed spawn leaves no
    domain behind. ``destroy`` of a missing domain and ``info`` of one are not failures.
    """

    def spawn(self, spec: DomainSpec) -> Performed[None]:
        """Define and boot; returns once the domain runs."""
        ...

    def destroy(self, name: str) -> Performed[bool]:
        """Stop and undefine; -> True if it existed."""
        ...

    def reboot(self, name: str) -> Performed[None]:
        """Restart; returns once it runs again."""
        ...

    def info(self, name: str) -> Performed[dict[str, Any] | None]:
        """-> {state, vcpus, memory_mb}, or None when there is no such domain."""
        ...

    def names(self) -> Performed[tuple[str, ...]]:
        """-> the sorted names of the domains on this host."""
        ...


@runtime_checkable
class NetDriverPerformer(Protocol):
    """Performs NetDriverEffect (linux_net) on one network host; every effect is an
    idempotent "ensure".

    On failure: ``NetworkDriverError`` naming the operation and what the system said
    (a command failed, an interface exists with another configuration). An effect of
    another family is a bug: TypeError.
    """

    def perform(self, effect: NetDriverEffect) -> Performed[Any]:
        ...


@runtime_checkable
class DirectoryPerformer(Protocol):
    """Performs DirectoryEffect against one LDAP directory.

    On failure: ``DirectoryUnavailable`` when the server cannot be reached or broke
    mid-request, ``DirectoryConflict`` when an add finds the entry (or value) present,
    ``InvalidParameterValue`` when the server refuses the request itself (bad DN,
    filter or value).
    """

    def perform(self, agent: Any, effect: DirectoryEffect) -> Performed[Any]:
        ...


@runtime_checkable
class ImageFetcher(Protocol):
    """Performs ImageEffect: ``FetchImage`` makes an image available in the agent's
    host's cache; ``StatObject`` reads an object's size and ETag (the API registering
    an image).

    On failure: ``ImageError`` (bad image id or size, the object store refused or
    failed, a transfer came short or changed; ``ObjectStoreUnavailable`` when the
    store does not answer); nothing partial is left in the cache.
    """

    def perform(self, agent: Any, effect: FetchImage | StatObject) -> Performed[Any]:
        """FetchImage -> True when this fetch transferred the image, False when it was
        cached; StatObject -> {"size_bytes", "etag"} or None."""
        ...


@runtime_checkable
class KeyPairGenerator(Protocol):
    """Performs KeyPairEffect: makes a fresh SSH key pair.

    On failure: ``ValueError`` for a key type it cannot make (callers validate first);
    making a key has no other expected failure.
    """

    def generate(self, key_type: str, comment: str) -> Performed[tuple[str, str]]:
        """-> (private key PEM, OpenSSH public key line ending in ``comment``)."""
        ...


@runtime_checkable
class ApiPerformer(Protocol):
    """Performs ApiEffect: one EC2 Query request (``common.workload.ApiCall``) -> its
    ``ApiAnswer``.

    On failure: none raised. An error answer is an answer (its HTTP status and XML
    error document); no answer at all (connection refused, timeout) is an ApiAnswer
    with status 0 and ``failure`` naming it, so the workload counts every outcome.
    """

    def perform(self, agent: Any, call: Any) -> Performed[Any]:
        ...


@runtime_checkable
class TaskPerformer(Protocol):
    """Performs TaskEffect: ``Fork`` starts a generator as a task of its own (a SimPy
    process, a thread) -> a handle; ``Join`` waits for every handle -> None.

    On failure: a forked task handles its own NovaErrors (the workload's launches do);
    an unexpected exception in a task (a bug) is not swallowed: the sim's event loop
    raises it, and real mode raises it at ``Join``. Registered per effect class with
    functions (``sim.tasks``, ``real.tasks``), which the table also accepts.
    """

    def perform(self, agent: Any, effect: TaskEffect) -> Performed[Any]:
        ...


@runtime_checkable
class WebPerformer(Protocol):
    """Performs WebEffect: one HTTP POST to a web hook receiver (``HttpPost``).

    On failure: ``DeliveryFailed`` when no answer came within the effect's timeout
    (refused, reset, timed out, a name that does not resolve). Any answer, 2xx or not,
    is a result: its status code. Redirects are answers too (never followed).
    """

    def post(self, agent: Any, effect: HttpPost) -> Performed[int]:
        ...


@runtime_checkable
class RuntimePerformer(Protocol):
    """Performs RuntimeEffect: the runtime's clock, ids, random streams and recorder.

    On failure: ``Choose`` with no options raises ValueError; nothing else fails.
    """

    def now(self) -> Performed[float]:
        ...

    def sleep(self, seconds: float) -> Performed[None]:
        ...

    def new_id(self, prefix: str) -> Performed[str]:
        ...

    def choose(self, agent: Any, options: tuple | range) -> Performed[Any]:
        ...

    def record(self, event: Any) -> Performed[None]:
        ...


#: The Protocol each family's performer satisfies.
PROTOCOLS: dict[type[Effect], type] = {
    StoreEffect: StorePerformer,
    RpcEffect: RpcPerformer,
    HypervisorEffect: HypervisorPerformer,
    NetDriverEffect: NetDriverPerformer,
    DirectoryEffect: DirectoryPerformer,
    ImageEffect: ImageFetcher,
    KeyPairEffect: KeyPairGenerator,
    ApiEffect: ApiPerformer,
    TaskEffect: TaskPerformer,
    WebEffect: WebPerformer,
    RuntimeEffect: RuntimePerformer,
}
assert set(PROTOCOLS) == set(FAMILIES), "every family has a Protocol"


@dataclass(frozen=True)
class AgentsOwn:
    """Register this for a family whose performer belongs to each agent (a host's
    hypervisor, its network driver): the agent's ``attribute`` performs it, and an agent
    without one gets ``error`` ("<agent> has no <what>")."""

    attribute: str
    error: type[NovaError]
    what: str


class PerformerTable:
    """The registration table both runtimes dispatch through (see the module docstring)."""

    def __init__(self) -> None:
        #: family or effect class -> (performer or handler, latency, is a family)
        self._registered: dict[type, tuple[Any, Latency, bool]] = {}
        #: Resolved (handler, latency) per concrete effect type; cleared on register.
        self.resolved: dict[type, tuple[Handler, Latency]] = {}

    def register(self, family_or_type: type, performer: Any, latency: Latency = None) -> None:
        """A family (a base in ``common.effects.FAMILIES``) takes a performer satisfying
        its Protocol, or ``AgentsOwn``; any other effect class takes a function
        ``(agent, effect)``. ``latency`` (sim only) is waited after each effect."""
        if not (isinstance(family_or_type, type) and issubclass(family_or_type, Effect)):
            raise TypeError(f"register needs an effect family or effect class, got {family_or_type!r}")
        family = family_or_type in PROTOCOLS
        if family and not isinstance(performer, (AgentsOwn, PROTOCOLS[family_or_type])):
            raise TypeError(
                f"{performer!r} cannot perform {family_or_type.__name__}: it does not satisfy "
                f"{PROTOCOLS[family_or_type].__name__}"
            )
        if not family and not callable(performer):
            raise TypeError(
                f"{family_or_type.__name__} is not a family: register a function (agent, effect), got {performer!r}"
            )
        self._registered[family_or_type] = (performer, latency, family)
        self.resolved.clear()

    def lookup(self, kind: type) -> tuple[Handler, Latency] | None:
        """-> (handler, latency) for effect class ``kind``, or None when nothing
        registered performs it. The most specific registration wins."""
        entry = self.resolved.get(kind)
        if entry is not None:
            return entry
        for klass in kind.__mro__:
            found = self._registered.get(klass)
            if found is not None:
                performer, latency, family = found
                if not family:
                    handler = performer
                elif isinstance(performer, AgentsOwn):
                    handler = _agents_own(performer)
                else:
                    handler = cast(type[Effect], kind).bind(performer)  # a family matched: an Effect
                entry = self.resolved[kind] = (handler, latency)
                return entry
        return None


def _agents_own(own: AgentsOwn) -> Handler:
    attribute, error, what = own.attribute, own.error, own.what

    def handler(agent: Any, effect: Effect) -> Any:
        performer = getattr(agent, attribute, None)
        if performer is None:
            raise error(f"{agent.name} has no {what}")
        return effect.perform_with(performer, agent)

    return handler
