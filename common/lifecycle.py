"""The instance lifecycle as one transition table.

Every state change in the system goes through ``transition()`` below, which names an
event; the table says from which states that event is legal and where it leads. The
store change is a compare-and-set on the current state, so a redelivered or late
message finds the state moved on and does nothing (it cannot move an instance back).

States follow the 2010 ``state_description`` strings; ``error`` and the soft-deleted
``deleted`` are ours (2010 deleted the record outright, which leaves nothing to audit).
"""

SCHEDULING = "scheduling"
SPAWNING = "spawning"
LAUNCHING = "launching"
RUNNING = "running"
REBOOTING = "rebooting"
SHUTTING_DOWN = "shutting_down"
DELETED = "deleted"
ERROR = "error"

STATES = (SCHEDULING, SPAWNING, LAUNCHING, RUNNING, REBOOTING, SHUTTING_DOWN, DELETED, ERROR)

#: event -> (states it may start from, state it leads to).  ``None`` = no record yet.
EVENTS = {
    "create": (frozenset({None}), SCHEDULING),
    "claim": (frozenset({SCHEDULING}), SPAWNING),
    "launch": (frozenset({SPAWNING}), LAUNCHING),
    "boot": (frozenset({LAUNCHING}), RUNNING),
    "reboot": (frozenset({RUNNING}), REBOOTING),
    "rebooted": (frozenset({REBOOTING}), RUNNING),
    "terminate": (
        frozenset({SCHEDULING, SPAWNING, LAUNCHING, RUNNING, REBOOTING, ERROR}),
        SHUTTING_DOWN,
    ),
    "destroyed": (frozenset({SHUTTING_DOWN}), DELETED),
    "fail": (frozenset({SCHEDULING, SPAWNING, LAUNCHING, REBOOTING}), ERROR),
    # A running instance whose domain vanished (its host crashed and came back empty).
    "lost": (frozenset({RUNNING}), ERROR),
}

#: Every legal (from, to) pair, for auditing a recorded history (invariant I6).
LEGAL = frozenset((src, dst) for sources, dst in EVENTS.values() for src in sources)

#: States an instance passes through on its way somewhere else (invariant I4).
TRANSITIONAL = frozenset({SCHEDULING, SPAWNING, LAUNCHING, REBOOTING, SHUTTING_DOWN})

#: States where nothing more happens unless a user asks (invariant I5).
SETTLED = frozenset({RUNNING, ERROR, DELETED})

#: States in which an instance holds its fixed address and its claimed vCPUs.
HOLDS_RESOURCES = frozenset(
    {SCHEDULING, SPAWNING, LAUNCHING, RUNNING, REBOOTING, SHUTTING_DOWN}
)


def target(event: str, current: str | None) -> str | None:
    """The state ``event`` leads to from ``current``, or None when it is not legal."""
    sources, dst = EVENTS[event]
    return dst if current in sources else None


def encode_transition(src: str | None, dst: str, at: float) -> str:
    return f"{src or ''}>{dst}@{at!r}"


def decode_transition(entry: str) -> tuple[str | None, str, float]:
    pair, _, at = entry.rpartition("@")
    src, _, dst = pair.partition(">")
    return (src or None), dst, float(at)
