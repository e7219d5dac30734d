"""Private RabbitMQ vhosts are made on the broker the AMQP URL names, or refused clearly."""

import uuid

import pytest

from real import vhosts
from real.transport import queue_stats


@pytest.fixture
def ctl_log(tmp_path, monkeypatch):
    """A rabbitmqctl that succeeds and does nothing, as one talking to another node would; -> its argv log."""
    log = tmp_path / "argv"
    fake = tmp_path / "rabbitmqctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 0\n')
    fake.chmod(0o755)
    monkeypatch.setattr(vhosts, "rabbitmqctl", lambda: str(fake))
    monkeypatch.delenv(vhosts.NODE_VARIABLE, raising=False)
    return log


def test_a_vhost_is_made_where_the_url_points(amqp_url):
    """On the machine's broker the vhost is made, reachable through its URL, and deleted again."""
    if vhosts.rabbitmqctl() is None:
        pytest.skip("no rabbitmqctl")
    name = f"novalab-test-{uuid.uuid4().hex[:8]}"
    made = vhosts.make_vhost(amqp_url, name)
    assert made is not None
    url, _ = made
    try:
        assert url.endswith("/" + name) and queue_stats(url, ["nothing-here"]) == {"nothing-here": None}
    finally:
        assert vhosts.delete_vhost(name)


def test_a_vhost_made_on_another_node_is_refused_and_removed(amqp_url, ctl_log):
    """When rabbitmqctl's node is not the broker at the URL, the vhost is deleted again and the error says how to fix it."""
    with pytest.raises(vhosts.VhostError, match="does not have it: that is another node"):
        vhosts.make_vhost(amqp_url, "novalab-elsewhere")
    assert ctl_log.read_text().splitlines()[-1] == "-q delete_vhost novalab-elsewhere"


def test_the_named_node_is_the_one_asked(amqp_url, ctl_log, monkeypatch):
    """NOVALAB_RABBITMQ_NODE (or node=) sends every rabbitmqctl command to that node."""
    monkeypatch.setenv(vhosts.NODE_VARIABLE, "rabbit@elsewhere")
    with pytest.raises(vhosts.VhostError, match="on node rabbit@elsewhere"):
        vhosts.make_vhost(amqp_url, "novalab-elsewhere")
    assert all(line.startswith("-q -n rabbit@elsewhere ") for line in ctl_log.read_text().splitlines())
