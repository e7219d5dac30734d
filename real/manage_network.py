"""``novalab manage network create`` and ``novalab manage floating create``.

Both write the store only (networks and pools are seeded once; running either twice
changes nothing), using the daemons' configuration file for the Redis URL, the key
prefix and the network layout.
"""

from __future__ import annotations

import sys

from common import floating
from common.errors import NovaError
from real import config as config_module
from real import manage
from real.daemon import network_manager
from real.runner import Agent
from real.startup import StartupError, connect


def _configure_network(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create the networks the configuration describes (idempotent)")
    create.add_argument("--fixed-range", default=None, help="override the configuration's fixed_range")


def _configure_floating(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="add floating addresses to a network host's pool")
    create.add_argument("host", help="the network host that will own them")
    create.add_argument("range", help="CIDR, e.g. 4.4.4.0/24")


def _session(args):
    config = config_module.load(getattr(args, "config", None))
    store, runtime = connect(config)
    return config, store, runtime


def _network(args) -> int:
    try:
        config, store, runtime = _session(args)
        if args.fixed_range:
            config = config.model_copy(update={"fixed_range": args.fixed_range})
        created = runtime.drive(Agent("manage"), network_manager(config).create_networks())
    except (config_module.ConfigError, StartupError, NovaError) as e:
        print(f"novalab manage network: {e}", file=sys.stderr)
        return 2
    print(f"created {len(created)} network(s): {', '.join(created) or 'none new'}")
    store.close()
    return 0


def _floating(args) -> int:
    try:
        _, store, runtime = _session(args)
        added = runtime.drive(Agent("manage"), floating.create_floating_ips(args.host, args.range))
    except (config_module.ConfigError, StartupError, NovaError) as e:
        print(f"novalab manage floating: {e}", file=sys.stderr)
        return 2
    print(f"added {added} floating address(es) to {args.host}")
    store.close()
    return 0


manage.register_command("network", "create fixed networks", _configure_network, _network)
manage.register_command("floating", "create floating addresses", _configure_floating, _floating)
