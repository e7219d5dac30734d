"""novalab manage network|floating create against the machine's Redis."""

import uuid

import pytest
import yaml

from common import keys
from common.effects import SCard, ZRangeByScore
from real.cli import main
from real.store import RedisStore


@pytest.fixture
def config(redis_url, tmp_path):
    prefix = f"novalab-manage-{uuid.uuid4().hex[:8]}:"
    path = tmp_path / "nova.yaml"
    path.write_text(yaml.safe_dump({"redis_url": redis_url, "key_prefix": prefix, "fixed_range": "10.40.0.0/28"}))
    yield str(path), RedisStore(redis_url, prefix=prefix)
    RedisStore(redis_url, prefix=prefix).flush()


def novalab(*argv):
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    return done.value.code


def test_network_create_seeds_the_pool_once(config, capsys):
    """network create seeds the flat pool; a second run creates nothing new."""
    path, store = config
    assert novalab("manage", "--config", path, "network", "create") == 0
    assert novalab("manage", "--config", path, "network", "create") == 0
    assert "none new" in capsys.readouterr().out
    assert store.execute(SCard(keys.available("flat"))) == 13


def test_floating_create_adds_only_new_addresses(config, capsys):
    """floating create fills a host's pool; repeating it adds nothing."""
    path, store = config
    assert novalab("manage", "--config", path, "floating", "create", "net1", "4.4.4.0/29") == 0
    assert novalab("manage", "--config", path, "floating", "create", "net1", "4.4.4.0/29") == 0
    assert "added 0" in capsys.readouterr().out
    assert len(store.execute(ZRangeByScore(keys.floating_available("net1"), "-inf", "+inf"))) == 6


def test_floating_create_with_a_bad_range_exits_2(config, capsys):
    """A range that is not CIDR is refused with exit 2 and a message naming it."""
    path, _ = config
    assert novalab("manage", "--config", path, "floating", "create", "net1", "4.4.4.1/29") == 2
    assert "4.4.4.1/29" in capsys.readouterr().err
