"""``novalab``: the operator's command.

    novalab compute --host NAME [--config FILE]     a compute worker
    novalab network [--host NAME] [--config FILE]   the network worker
    novalab scheduler [--host NAME] [--config FILE] the scheduler
    novalab api [--config FILE]                     the EC2 API (api_port, 8773)
    novalab objectstore --root DIR --keys FILE [--bind HOST] [--port 3333]
                                                    the S3-compatible object store
    novalab run FILE [options]                       same as run-scenario FILE [options]
    novalab manage user|project|role|credentials    users, projects, roles (LDAP)
    novalab dhcpbridge add|old|del MAC IP HOST      dnsmasq's lease hook
    novalab validate FILE...                        check scenario files

Exit status: 0 clean, 1 a run's invariant or SLO failed, 2 bad input or a service it
needs is unreachable.
"""

from __future__ import annotations

import argparse
import socket
import sys
from importlib import metadata
from pathlib import Path

from common.scenario import ScenarioError, parse_yaml


def main(argv=None):
    parser = argparse.ArgumentParser(prog="novalab", description="novalab: a testbed of the 2010 Nova architecture.")
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("compute", "network", "scheduler"):
        daemon = sub.add_parser(kind, help=f"run a {kind} worker")
        daemon.add_argument("--host", default=socket.gethostname() if kind != "compute" else None,
                            required=kind == "compute", help="this worker's host name (its private queue)")
        daemon.add_argument("--config", default=None, help="YAML configuration (NOVALAB_* variables override it)")
    store = sub.add_parser("objectstore", help="serve the S3-compatible object store")
    store.add_argument("--root", required=True, help="directory holding the buckets")
    store.add_argument("--keys", required=True,
                       help="YAML: access key -> {secret, project, admin} (until the directory is wired in)")
    store.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    store.add_argument("--port", type=int, default=3333)
    api = sub.add_parser("api", help="serve the EC2 API (/services/Cloud on api_port, 8773)")
    api.add_argument("--config", default=None, help="YAML configuration (NOVALAB_* variables override it)")
    run = sub.add_parser("run", help="run a scenario (same as run-scenario; see run-scenario --help)",
                         add_help=False)
    run.add_argument("arguments", nargs=argparse.REMAINDER)
    from real import manage, manage_network  # noqa: F401  (registers network/floating)

    manage.add_parser(sub)
    from real import dhcpbridge

    dhcpbridge.add_parser(sub)
    validate = sub.add_parser("validate", help="check scenario files without running them")
    validate.add_argument("scenarios", nargs="+")
    args = parser.parse_args(argv)

    if args.command in ("compute", "network", "scheduler"):
        from real import config as config_module
        from real.daemon import serve

        try:
            config = config_module.load(args.config)
        except config_module.ConfigError as e:
            print(f"novalab {args.command}: {e}", file=sys.stderr)
            sys.exit(2)
        sys.exit(serve(args.command, args.host, config))
    if args.command == "objectstore":
        from real.objectstore import ObjectStoreApp, file_lookup, serve as serve_store

        try:
            lookup = file_lookup(args.keys)
        except (OSError, ValueError) as e:
            print(f"novalab objectstore: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"novalab objectstore: serving {args.root} on http://{args.bind}:{args.port}", file=sys.stderr)
        serve_store(ObjectStoreApp(args.root, lookup), args.bind, args.port)
        sys.exit(0)
    if args.command == "api":
        from real import config as config_module
        from real.api import serve_config

        try:
            config = config_module.load(args.config)
        except config_module.ConfigError as e:
            print(f"novalab api: {e}", file=sys.stderr)
            sys.exit(2)
        sys.exit(serve_config(config))
    if args.command == "run":
        sys.exit(run_mode(args))
    if args.command == "dhcpbridge":
        sys.exit(dhcpbridge.run(args))
    if args.command == "manage":
        sys.exit(manage.run(args))
    sys.exit(validate_files(args.scenarios))


def run_mode(args) -> int:
    """Hand the arguments to ``run-scenario``, found by its entry point (real/ does not
    import sim/, which owns the command)."""
    for entry in metadata.entry_points(group="console_scripts"):
        if entry.name == "run-scenario":
            try:
                entry.load()(args.arguments)
            except SystemExit as done:
                return done.code or 0
            return 0
    print("novalab run: the run-scenario command is not installed (pip install -e .)", file=sys.stderr)
    return 2


def validate_files(paths) -> int:
    status = 0
    for path in paths:
        try:
            scenario = parse_yaml(Path(path).read_bytes(), path)
        except FileNotFoundError:
            print(f"{path}: no such file", file=sys.stderr)
            status = 2
        except ScenarioError as e:
            print(e, file=sys.stderr)
            status = 2
        else:
            print(f"{path}: ok ({scenario.name}, {scenario.cloud.hosts.count} hosts, "
                  f"{scenario.workload.requests} requests)")
    return status


if __name__ == "__main__":
    main()
