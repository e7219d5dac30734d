"""The lifecycle table: targets, the LEGAL pairs, transition log entries, state classes."""

import pytest

from common import lifecycle as lc

#: The table of common/lifecycle.py, spelled out independently of its code.
TABLE = {
    "create": ({None}, "scheduling"),
    "claim": ({"scheduling"}, "spawning"),
    "launch": ({"spawning"}, "launching"),
    "boot": ({"launching"}, "running"),
    "reboot": ({"running"}, "rebooting"),
    "rebooted": ({"rebooting"}, "running"),
    "terminate": ({"scheduling", "spawning", "launching", "running", "rebooting", "error"}, "shutting_down"),
    "destroyed": ({"shutting_down"}, "deleted"),
    "fail": ({"scheduling", "spawning", "launching", "rebooting"}, "error"),
    "lost": ({"running"}, "error"),
}
FROM_ANY = (None, *lc.STATES)
CASES = [(event, src) for event in TABLE for src in FROM_ANY]


def test_events_are_exactly_the_table():
    """The module knows exactly the events of the table."""
    assert set(lc.EVENTS) == set(TABLE)


@pytest.mark.parametrize("event, src", CASES)
def test_target_of_every_event_from_every_state(event, src):
    """target() is the event's destination from a legal source state, None from any other."""
    sources, dst = TABLE[event]
    assert lc.target(event, src) == (dst if src in sources else None)


def test_unknown_event_is_a_key_error():
    """An event not in the table is a programming error, not a silent None."""
    with pytest.raises(KeyError):
        lc.target("explode", lc.RUNNING)


def test_legal_is_exactly_the_tables_pairs():
    """LEGAL holds every (from, to) of the table and nothing else."""
    assert {(src, dst) for sources, dst in lc.EVENTS.values() for src in sources} == lc.LEGAL
    assert {(src, dst) for sources, dst in TABLE.values() for src in sources} == lc.LEGAL


def test_no_way_out_of_deleted_and_no_way_back_to_scheduling():
    """deleted is final; only create leads to scheduling."""
    assert not any(src == lc.DELETED for src, _ in lc.LEGAL)
    assert {src for src, dst in lc.LEGAL if dst == lc.SCHEDULING} == {None}


def test_every_state_is_reachable_from_creation():
    """Following LEGAL from None reaches every state."""
    seen, frontier = set(), {None}
    while frontier:
        frontier = {dst for src, dst in lc.LEGAL if src in frontier} - seen
        seen |= frontier
    assert seen == set(lc.STATES)


@pytest.mark.parametrize(
    "src, dst, at, entry",
    [
        (None, "scheduling", 10.0, ">scheduling@10.0"),
        ("running", "rebooting", 1234.5678, "running>rebooting@1234.5678"),
        ("shutting_down", "deleted", 0.1 + 0.2, "shutting_down>deleted@0.30000000000000004"),
    ],
)
def test_transition_entry_round_trip(src, dst, at, entry):
    """encode_transition spells '<from>><to>@<repr(time)>' and decode gives it back exactly."""
    assert lc.encode_transition(src, dst, at) == entry
    assert lc.decode_transition(entry) == (src, dst, at)


@pytest.mark.parametrize("src, dst", sorted(lc.LEGAL, key=str))
def test_every_legal_pair_round_trips(src, dst):
    """Every legal transition survives the log encoding."""
    assert lc.decode_transition(lc.encode_transition(src, dst, 42.25)) == (src, dst, 42.25)


def test_settled_and_transitional_partition_the_states():
    """SETTLED and TRANSITIONAL are disjoint and together are every state."""
    assert not lc.SETTLED & lc.TRANSITIONAL
    assert set(lc.STATES) == lc.SETTLED | lc.TRANSITIONAL


def test_settled_states_only_move_on_request():
    """A settled state moves only when a user asks (reboot, terminate) or its domain is lost."""
    events = {e for e, (sources, _) in lc.EVENTS.items() if sources & lc.SETTLED}
    assert events == {"reboot", "terminate", "lost"}


def test_holds_resources_is_the_live_states():
    """Resource-holding states are every state but error and deleted."""
    assert set(lc.STATES) - {lc.ERROR, lc.DELETED} == lc.HOLDS_RESOURCES
