"""The NET audit's guest checks against the store's records, after a store loss too."""

from common import keys
from real.run_network_audit import _guest_violations

GUEST = {"instance": "i-1", "host": "host1", "mac": "02:00:00:00:00:01", "leases": [], "plugged_at": 0.0}
LOST = {keys.RECOVERED: {"losses_noticed": "1"}}


def test_a_guest_without_a_record_is_a_violation_when_the_store_lost_nothing():
    """No store loss: a guest whose instance has no record is reported."""
    assert _guest_violations([{**GUEST, "unplugged_at": 1.0}], {}, 2.0)[0] == ["guest i-1 on host1 has no instance record"]


def test_a_guest_whose_record_a_store_loss_took_is_counted_not_reported():
    """After a store loss, a guest unplugged as an orphan is counted as lost with the store, not reported."""
    assert _guest_violations([{**GUEST, "unplugged_at": 1.0}], LOST, 2.0) == ([], 0, 1)


def test_a_guest_whose_record_a_store_loss_took_is_not_checked_while_still_plugged():
    """A compute killed with its test-driver node leaves its guest plugged: the domain is I3's to check."""
    assert _guest_violations([GUEST], LOST, 2.0) == ([], 0, 1)
