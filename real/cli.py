"""``novalab``: the operator's command.

    novalab compute --host NAME [--config FILE]     a compute worker
    novalab network [--host NAME] [--config FILE]   the network worker
    novalab scheduler [--host NAME] [--config FILE] the scheduler
    novalab api [--config FILE]                     the EC2 API (api_port, 8773)
        (each, and objectstore, takes --production: a real site, real/site.py)
    novalab objectstore --config FILE [--root DIR] [--bind HOST] [--port N]
                                                    the S3-compatible object store,
                                                    credentials from the directory
    novalab objectstore --root DIR --keys FILE [--bind HOST] [--port 3333]
                                                    the same, keys from a YAML file
    novalab deploy up|down|status [--dir DIR]       a local deployment (real/deploy.py)
    novalab run FILE [options]                       same as run-scenario FILE [options]
    novalab manage user|project|role|credentials    users, projects, roles (LDAP)
    novalab dhcpbridge add|old|del MAC IP HOST      dnsmasq's lease hook
    novalab validate FILE...                        check scenario files
    novalab calibrate RUN_DIR [--out FILE]          fit the sim's timing from a real run

Exit status: 0 clean, 1 a run's invariant or SLO failed, 2 bad input or a service it
needs is unreachable.
"""

from __future__ import annotations

import argparse
import socket
import sys
from importlib import metadata

from common.scenario import ScenarioError
from real import scenario_file


def main(argv=None):
    parser = argparse.ArgumentParser(prog="novalab", description="novalab: a testbed of the 2010 Nova architecture.")
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("compute", "network", "scheduler"):
        daemon = sub.add_parser(kind, help=f"run a {kind} worker")
        daemon.add_argument("--host", default=socket.gethostname() if kind != "compute" else None,
                            required=kind == "compute", help="this worker's host name (its private queue)")
        daemon.add_argument("--config", default=None, help="YAML configuration (NOVALAB_* variables override it)")
        daemon.add_argument("--production", action="store_true", help=PRODUCTION_HELP)
    store = sub.add_parser("objectstore", help="serve the S3-compatible object store")
    store.add_argument("--config", default=None,
                       help="YAML configuration: credentials from its directory (ldap_*), objectstore_root, "
                            "objectstore_listen, objectstore_port (NOVALAB_* variables override it)")
    store.add_argument("--production", action="store_true", help=PRODUCTION_HELP)
    store.add_argument("--root", default=None, help="directory holding the buckets (default: objectstore_root)")
    store.add_argument("--keys", default=None,
                       help="YAML: access key -> {secret, project, admin}, instead of the directory")
    store.add_argument("--bind", default=None, help="address to listen on (default: objectstore_listen, 127.0.0.1)")
    store.add_argument("--port", type=int, default=None, help="port (default: objectstore_port, 3333)")
    api = sub.add_parser("api", help="serve the EC2 API (/services/Cloud on api_port, 8773)")
    api.add_argument("--config", default=None, help="YAML configuration (NOVALAB_* variables override it)")
    api.add_argument("--production", action="store_true", help=PRODUCTION_HELP)
    run = sub.add_parser("run", help="run a scenario (same as run-scenario; see run-scenario --help)",
                         add_help=False)
    run.add_argument("arguments", nargs=argparse.REMAINDER)
    from real import manage, manage_network, manage_webhooks  # noqa: F401  (registers network/floating/webhook)

    manage.add_parser(sub)
    from real import deploy

    deploy.add_parser(sub)
    from real import dhcpbridge

    dhcpbridge.add_parser(sub)
    calibrate = sub.add_parser("calibrate", help="fit the sim's timing from a real run directory "
                               "(see python -m sim.calibrate --help)", add_help=False)
    calibrate.add_argument("arguments", nargs=argparse.REMAINDER)
    validate = sub.add_parser("validate", help="check scenario files without running them")
    validate.add_argument("scenarios", nargs="+")
    args = parser.parse_args(argv)

    if args.command in ("compute", "network", "scheduler", "api"):
        sys.exit(serve_command(args))
    if args.command == "objectstore":
        sys.exit(objectstore(args))
    if args.command == "run":
        sys.exit(run_mode(args))
    if args.command == "calibrate":
        sys.exit(hand_over("novalab.tools", "calibrate", args.arguments))
    if args.command == "dhcpbridge":
        sys.exit(dhcpbridge.run(args))
    if args.command == "manage":
        sys.exit(manage.run(args))
    if args.command == "deploy":
        sys.exit(deploy.run(args))
    sys.exit(validate_files(args.scenarios))


PRODUCTION_HELP = ("a real site: the same as production: true in the configuration (refused, exit 2, naming "
                   "every setting to fix, unless it describes one)")


def serve_command(args) -> int:
    """A daemon or the API with the configuration it is given (exit 2 for a bad one)."""
    from real import config as config_module

    try:
        config = load_config(args)
    except config_module.ConfigError as e:
        print(f"novalab {args.command}: {e}", file=sys.stderr)
        return 2
    if args.command == "api":
        from real.api import serve_config

        return serve_config(config)
    from real.daemon import serve

    return serve(args.command, args.host, config)


def load_config(args):
    """The daemon configuration of ``--config``, with ``--production`` applied.
    Raises real.config.ConfigError."""
    from real import config as config_module

    config = config_module.load(args.config)
    return config.model_copy(update={"production": True}) if args.production else config


def objectstore(args) -> int:
    """``novalab objectstore``: keys from a file (--keys) or from the directory of the
    configuration (--config, or the defaults and NOVALAB_* variables)."""
    import logging

    from real import config as config_module
    from real.objectstore import ObjectStoreApp
    from real.objectstore import serve as serve_store
    from real.objectstore.auth import directory_lookup, file_lookup

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s objectstore %(levelname)s %(name)s: %(message)s")
    prog = "novalab objectstore"
    ldap = None
    try:
        config = load_config(args)
        if args.keys:
            if config.production:
                print(f"{prog}: refusing to start: production: true takes credentials from the directory, "
                      "not from --keys", file=sys.stderr)
                return 2
            if not args.root:
                print(f"{prog}: --keys needs --root", file=sys.stderr)
                return 2
            lookup = file_lookup(args.keys)
        else:
            from common.errors import NovaError
            from real import site
            from real.directory import from_config
            from real.startup import StartupError

            try:
                site.check(config, "objectstore")
            except StartupError as e:
                print(f"{prog}: refusing to start: {e}", file=sys.stderr)
                return 2
            try:
                directory, ldap = from_config(config)
                ldap.run(directory.get_user("novalab-startup-check"))
            except NovaError as e:
                print(f"{prog}: refusing to start: cannot use the directory at {config.ldap_url}: {e}", file=sys.stderr)
                return 2
            lookup = directory_lookup(ldap, directory)
    except config_module.ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    root = args.root or config.objectstore_root
    host = args.bind or config.objectstore_listen
    port = config.objectstore_port if args.port is None else args.port
    try:
        app = ObjectStoreApp(root, lookup)
    except OSError as e:
        print(f"{prog}: cannot use {root}: {e}", file=sys.stderr)
        return 2
    print(f"{prog}: serving {root} on http://{host}:{port}"
          f" ({'keys from ' + args.keys if args.keys else 'credentials from ' + config.ldap_url})",
          file=sys.stderr, flush=True)
    try:
        serve_store(app, host, port)
    except OSError as e:
        print(f"{prog}: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 2
    finally:
        if ldap is not None:
            ldap.close()
    return 0


def run_mode(args) -> int:
    """Hand the arguments to ``run-scenario``, found by its entry point (real/ does not
    import sim/, which owns the command)."""
    for entry in metadata.entry_points(group="console_scripts"):
        if entry.name == "run-scenario":
            try:
                entry.load()(args.arguments)
            except SystemExit as done:
                if isinstance(done.code, str):  # sys.exit(message): print it, as the interpreter would
                    print(done.code, file=sys.stderr)
                    return 1
                return done.code or 0
            return 0
    print("novalab run: the run-scenario command is not installed (pip install -e .)", file=sys.stderr)
    return 2


def hand_over(group: str, name: str, arguments) -> int:
    """Run the command an entry point names (the calibration is the simulator's: real/
    does not import sim/)."""
    for entry in metadata.entry_points(group=group):
        if entry.name == name:
            return entry.load()(arguments) or 0
    print(f"novalab {name}: not installed (pip install -e .); from a source tree run "
          f"python -m sim.{name}", file=sys.stderr)
    return 2


def validate_files(paths) -> int:
    """Check each file; one line per file on stderr for a bad one (exit 2)."""
    status = 0
    for path in paths:
        try:
            scenario, _ = scenario_file.load(path)
        except ScenarioError as e:
            print(e, file=sys.stderr)
            status = 2
        else:
            print(f"{path}: ok ({scenario.name}, {scenario.cloud.hosts.count} hosts, "
                  f"{scenario.workload.requests} requests)")
    return status

if __name__ == "__main__":
    main()
