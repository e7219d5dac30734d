"""``novalab manage webhook add|list|remove``: a project's web hooks (common.webhooks).

    novalab manage webhook add PROJECT URL       register URL; prints its id and the
                                                 signing secret (shown this once)
    novalab manage webhook list [PROJECT]        every hook (of PROJECT), without secrets
    novalab manage webhook remove PROJECT URL|ID

The hooks live in the store (the daemons' configuration file names it); the secret is
made with ``secrets``. Exit status: 0 done, 1 refused (the project has the URL already,
has the most hooks it may, or has no such hook), 2 bad input (a URL that is not http or
https, ...) or the store is unreachable.
"""

from __future__ import annotations

import secrets
import sys
import time

from common import webhooks
from common.errors import InvalidParameterValue, NotFound, NovaError, QuotaExceeded, StoreUnavailable
from real import config as config_module
from real import manage
from real.runner import Agent
from real.startup import StartupError, connect

#: Bytes of randomness in a signing secret (written as hex: 64 characters).
SECRET_BYTES = 32


def _configure(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a URL for a project's events; prints the signing secret")
    add.add_argument("project")
    add.add_argument("url", help="http:// or https://")
    listing = sub.add_parser("list", help="list web hooks (without their secrets)")
    listing.add_argument("project", nargs="?", default=None)
    remove = sub.add_parser("remove", help="remove a project's web hook, by URL or id")
    remove.add_argument("project")
    remove.add_argument("hook", metavar="URL|ID")


def add(runtime, project: str, url: str) -> dict:
    """Register ``url`` for ``project`` with a fresh id and secret; -> the hook (with its secret)."""
    hook_id = "wh-" + secrets.token_hex(4)
    return runtime.drive(Agent("manage"), webhooks.register(project, url, hook_id, secrets.token_hex(SECRET_BYTES),
                                                            time.time()))


def _run(args) -> int:
    prog = f"novalab manage webhook {args.action}"
    if args.action == "add":
        try:
            webhooks.validate_url(args.url)  # before anything is reached: bad input is exit 2
        except InvalidParameterValue as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 2
    try:
        config = config_module.load(getattr(args, "config", None))
        store, runtime = connect(config)
    except (config_module.ConfigError, StartupError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    try:
        return _act(args, runtime)
    except (InvalidParameterValue, StoreUnavailable) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (webhooks.HookExists, QuotaExceeded, NotFound, NovaError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
        store.close()


def _act(args, runtime) -> int:
    agent = Agent("manage")
    if args.action == "add":
        hook = add(runtime, args.project, args.url)
        print(f"{hook['id']} {hook['project']} {hook['url']}")
        print(f"secret {hook['secret']}")
    elif args.action == "list":
        rows = runtime.drive(agent, webhooks.hooks(args.project))
        manage._table([("ID", "PROJECT", "URL", "PENDING")] +
                      [(h["id"], h["project"], h["url"], str(h["pending"])) for h in rows], sys.stdout)
    else:
        hook_id = runtime.drive(agent, webhooks.remove(args.project, args.hook))
        print(f"removed {hook_id} from {args.project}")
    return 0


manage.register_command("webhook", "a project's web hooks (add, list, remove)", _configure, _run)
