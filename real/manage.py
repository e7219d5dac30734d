"""``novalab manage``: the operator's commands for users, projects, roles and credentials
(2010's ``nova-manage user|project|role``), against the LDAP directory.

    novalab manage init                                   create the base entries
    novalab manage user create NAME [--access K] [--secret S] [--admin]
    novalab manage user delete NAME
    novalab manage user list
    novalab manage project create NAME MANAGER [--description D] [--member USER ...]
    novalab manage project delete NAME
    novalab manage project add-member PROJECT USER
    novalab manage project remove-member PROJECT USER
    novalab manage project list [--user USER]
    novalab manage role add USER ROLE [--project PROJECT]
    novalab manage role remove USER ROLE [--project PROJECT]
    novalab manage credentials USER PROJECT [--out FILE]  an environment file for
                                                          euca2ools/boto3/aws/swift
                                                          (EC2_*, AWS_*, ST_*)

``user create`` makes the access and secret keys with ``secrets`` unless given. Roles
follow 2010: a project role takes effect only for a user who also has the global role.

Where the directory is: ``NOVALAB_LDAP_URL`` (default ``ldap://127.0.0.1:389/``),
``NOVALAB_LDAP_BIND_DN`` (default ``cn=admin,<root>``), ``NOVALAB_LDAP_PASSWORD``,
``NOVALAB_LDAP_ROOT`` (default ``dc=novalab,dc=local``), or the ``ldap_*`` fields of
the daemon configuration (``--config``, TLS settings included) once it has them; the
environment wins. A configuration with ``ldap_map`` (an existing directory, read only)
is refused.

Every command is also a function here (``user_create(session, ...)`` and so on) taking
a ``Session``: an LdapDirectory plus a ``common.directory.Directory``, driven by a
blocking loop. Exit status: 0 done, 1 refused (exists, not found, not a member), 2 bad
input or the directory is unreachable.

Other subcommands (``network create``, ``floating create``, ``webhook add|list|remove``)
plug in with ``register_command`` before ``add_parser`` runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.directory import Directory, Project, User
from common.errors import (
    AuthFailure,
    DirectoryConflict,
    DirectoryUnavailable,
    InvalidParameterValue,
    NotFound,
    NovaError,
)
from common.rbac import ROLES
from real.directory import LdapDirectory

DEFAULT_URL = "ldap://127.0.0.1:389/"
DEFAULT_ROOT = "dc=novalab,dc=local"
EC2_URL = "http://127.0.0.1:8773/services/Cloud"
S3_URL = "http://127.0.0.1:3333"
REGION = "nova"

# ---------------------------------------------------------------------------
# Configuration and session


@dataclass(frozen=True)
class LdapSettings:
    url: str = DEFAULT_URL
    bind_dn: str = ""
    password: str = ""
    root: str = DEFAULT_ROOT
    timeout: float = 5.0
    starttls: bool = False
    ca_file: str | None = None

    def __repr__(self):  # never show the password
        return f"LdapSettings(url={self.url!r}, bind_dn={self.bind_dn!r}, root={self.root!r})"


def ldap_settings(config_path: str | None = None, environ=os.environ) -> LdapSettings:
    """The directory's address: DaemonConfig's ``ldap_*`` fields where it has them,
    overridden by ``NOVALAB_LDAP_URL``, ``_BIND_DN``, ``_PASSWORD``, ``_ROOT``,
    ``_TIMEOUT``. Raises real.config.ConfigError for a bad file or value."""
    values: dict = {}
    from real import config as config_module

    fields = config_module.DaemonConfig.model_fields
    if config_path is not None or any(f"ldap_{k}" in fields for k in ("url", "bind_dn", "password", "root")):
        cfg = config_module.load(config_path, environ)
        if cfg.ldap_map is not None:
            raise config_module.ConfigError(f"{config_path}: ldap_map names an existing directory, which is the "
                                            "site's: keep its users and groups with its own tools")
        for key in ("url", "bind_dn", "password", "root", "timeout", "starttls", "ca_file"):
            if f"ldap_{key}" in fields and getattr(cfg, f"ldap_{key}") is not None:
                values[key] = getattr(cfg, f"ldap_{key}")
    for key in ("url", "bind_dn", "password", "root", "timeout"):
        value = environ.get(f"NOVALAB_LDAP_{key.upper()}")
        if value is not None:
            values[key] = value
    if "timeout" in values:
        try:
            values["timeout"] = float(values["timeout"])
        except ValueError:
            raise config_module.ConfigError(f"NOVALAB_LDAP_TIMEOUT: not a number: {values['timeout']!r}") from None
    root = values.get("root") or DEFAULT_ROOT
    values["root"] = root
    values.setdefault("bind_dn", f"cn=admin,{root}")
    return LdapSettings(**values)


class Session:
    """A directory for operator commands: ``run(gen)`` drives a Directory generator."""

    def __init__(self, ldap: LdapDirectory, directory: Directory):
        self.ldap = ldap
        self.directory = directory

    @classmethod
    def connect(cls, settings: LdapSettings) -> Session:
        try:
            directory = Directory(settings.root)
        except ValueError as e:
            raise InvalidParameterValue(f"NOVALAB_LDAP_ROOT: {e}") from None
        return cls(LdapDirectory(settings.url, settings.bind_dn, settings.password, settings.timeout,
                                 starttls=settings.starttls, ca_file=settings.ca_file), directory)

    def run(self, gen):
        return self.ldap.run(gen)

    def close(self) -> None:
        self.ldap.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# The operations


def new_access_key() -> str:
    """20 hex characters, like an AWS access key id's length."""
    return secrets.token_hex(10)


def new_secret_key() -> str:
    """40 URL-safe characters."""
    return secrets.token_urlsafe(30)


def init(session: Session) -> int:
    """Create the root, ou=Users and ou=Groups where missing; -> how many were made."""
    return session.run(session.directory.ensure_base())


def user_create(session: Session, name: str, access_key: str | None = None, secret_key: str | None = None,
                admin: bool = False) -> User:
    return session.run(session.directory.create_user(
        name, access_key or new_access_key(), secret_key or new_secret_key(), admin))


def user_delete(session: Session, name: str) -> bool:
    return session.run(session.directory.delete_user(name))


def user_list(session: Session) -> list[User]:
    return session.run(session.directory.list_users())


def project_create(session: Session, name: str, manager: str, description: str = "", members=()) -> Project:
    return session.run(session.directory.create_project(name, manager, description, tuple(members)))


def project_delete(session: Session, name: str) -> bool:
    return session.run(session.directory.delete_project(name))


def project_add_member(session: Session, project: str, user: str) -> bool:
    return session.run(session.directory.add_member(project, user))


def project_remove_member(session: Session, project: str, user: str) -> bool:
    return session.run(session.directory.remove_member(project, user))


def project_list(session: Session, user: str | None = None) -> list[Project]:
    return session.run(session.directory.list_projects(user))


def role_add(session: Session, user: str, role: str, project: str | None = None) -> bool:
    return session.run(session.directory.add_role(user, role, project))


def role_remove(session: Session, user: str, role: str, project: str | None = None) -> bool:
    return session.run(session.directory.remove_role(user, role, project))


def credentials(session: Session, user: str, project: str, ec2_url: str = EC2_URL, s3_url: str = S3_URL,
                region: str = REGION) -> str:
    """The environment file of ``user`` in ``project`` (2010's novarc, plus the AWS_*
    names boto3 reads and the ST_* ones python-swiftclient reads). AuthFailure when
    those credentials would not authenticate (e.g. the user is not a member); NotFound
    for no such user."""
    directory = session.directory
    found = session.run(directory.get_user(user))
    if found is None:
        raise NotFound(f"no user {user!r}")
    access = f"{found.access_key}:{project}"
    session.run(directory.authenticate(access))  # the same check the API will make
    lines = {
        "EC2_ACCESS_KEY": access,
        "EC2_SECRET_KEY": found.secret_key,
        "EC2_URL": ec2_url,
        "S3_URL": s3_url,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": found.secret_key,
        "AWS_DEFAULT_REGION": region,
        # boto3 and the AWS CLI take these as the endpoints (botocore 1.31 and later).
        "AWS_ENDPOINT_URL_EC2": ec2_url,
        "AWS_ENDPOINT_URL_S3": s3_url,
        # python-swiftclient's swift command: auth v1.0 on the object store, <project>:<user>.
        "ST_AUTH": f"{s3_url}/auth/v1.0",
        "ST_USER": f"{project}:{user}",
        "ST_KEY": found.secret_key,
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in lines.items())


# ---------------------------------------------------------------------------
# Command line

#: Subcommands others add (``network create``, ``floating create``): name -> (help,
#: configure(parser), handler(args) -> exit status). Filled by ``register_command``.
EXTRA_COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def register_command(name: str, help: str, configure: Callable, handler: Callable) -> None:
    """Mount ``novalab manage NAME``: ``configure(parser)`` adds its arguments (and its
    own subcommands), ``handler(args)`` runs it and returns the exit status. A handler
    that needs the directory can call ``open_session(args)``."""
    EXTRA_COMMANDS[name] = (help, configure, handler)


def open_session(args) -> Session:
    return Session.connect(ldap_settings(getattr(args, "config", None)))


def _print_users(users, out) -> None:
    rows = [("NAME", "ACCESS KEY", "ADMIN")] + [(u.name, u.access_key, "yes" if u.is_admin else "no") for u in users]
    _table(rows, out)


def _print_projects(projects, out) -> None:
    rows = [("NAME", "MANAGER", "MEMBERS", "DESCRIPTION")] + [
        (p.name, p.manager, ",".join(p.members), p.description) for p in projects]
    _table(rows, out)


def _table(rows, out) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def _cmd_init(args, session, out):
    made = init(session)
    print(f"directory {session.directory.root}: {made} base entr{'y' if made == 1 else 'ies'} created", file=out)
    return 0


def _cmd_user_create(args, session, out):
    user = user_create(session, args.name, args.access, args.secret, args.admin)
    print(f"name: {user.name}\naccess_key: {user.access_key}\nsecret_key: {user.secret_key}\n"
          f"admin: {'yes' if user.is_admin else 'no'}", file=out)
    return 0


def _cmd_user_delete(args, session, out):
    if not user_delete(session, args.name):
        raise NotFound(f"no user {args.name!r}")
    print(f"user {args.name} deleted", file=out)
    return 0


def _cmd_user_list(args, session, out):
    _print_users(user_list(session), out)
    return 0


def _cmd_project_create(args, session, out):
    project = project_create(session, args.name, args.manager, args.description or "", args.member or ())
    print(f"project {project.name} created, manager {project.manager}, members {','.join(project.members)}", file=out)
    return 0


def _cmd_project_delete(args, session, out):
    if not project_delete(session, args.name):
        raise NotFound(f"no project {args.name!r}")
    print(f"project {args.name} deleted", file=out)
    return 0


def _cmd_add_member(args, session, out):
    added = project_add_member(session, args.project, args.user)
    print(f"user {args.user} {'added to' if added else 'was already a member of'} project {args.project}", file=out)
    return 0


def _cmd_remove_member(args, session, out):
    if not project_remove_member(session, args.project, args.user):
        raise NotFound(f"user {args.user!r} is not a member of project {args.project!r}")
    print(f"user {args.user} removed from project {args.project}", file=out)
    return 0


def _cmd_project_list(args, session, out):
    _print_projects(project_list(session, args.user), out)
    return 0


def _cmd_role_add(args, session, out):
    added = role_add(session, args.user, args.role, args.project)
    where = f" in project {args.project}" if args.project else ""
    print(f"user {args.user} {'now has' if added else 'already had'} role {args.role}{where}", file=out)
    if args.project and not session.run(session.directory.has_role(args.user, args.role)):
        print(f"note: it takes effect once {args.user} also has the global {args.role} role "
              f"(novalab manage role add {args.user} {args.role})", file=out)
    return 0


def _cmd_role_remove(args, session, out):
    where = f" in project {args.project}" if args.project else ""
    if not role_remove(session, args.user, args.role, args.project):
        raise NotFound(f"user {args.user!r} does not have role {args.role!r}{where}")
    print(f"user {args.user} no longer has role {args.role}{where}", file=out)
    return 0


def service_urls(config_path: str | None = None, environ=os.environ) -> tuple[str, str]:
    """(EC2 URL, S3 URL) of the deployment the configuration describes: ``api_listen``
    and ``api_port``; ``objectstore_listen`` and ``objectstore_port`` (a wildcard
    listen address becomes 127.0.0.1). Defaults: EC2_URL, S3_URL."""
    from real import config as config_module

    return urls_of(config_module.load(config_path, environ))


def urls_of(config) -> tuple[str, str]:
    """(EC2 URL, S3 URL) of a real.config.DaemonConfig (service_urls)."""

    def host(listen: str) -> str:
        listen = "127.0.0.1" if listen in ("", "0.0.0.0", "::") else listen
        return f"[{listen}]" if ":" in listen else listen

    return (f"http://{host(config.api_listen)}:{config.api_port}/services/Cloud",
            f"http://{host(config.objectstore_listen)}:{config.objectstore_port}")


def _cmd_credentials(args, session, out):
    ec2_url, s3_url = args.ec2_url, args.s3_url
    if ec2_url is None or s3_url is None:
        derived = service_urls(getattr(args, "config", None))
        ec2_url, s3_url = ec2_url or derived[0], s3_url or derived[1]
    text = credentials(session, args.user, args.project, ec2_url, s3_url)
    if args.out:
        path = Path(args.out)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        print(f"credentials of {args.user} in {args.project} written to {path}", file=sys.stderr)
    else:
        out.write(text)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``manage`` and its subcommands to ``subparsers`` (of the novalab CLI)."""
    manage = subparsers.add_parser("manage", help="users, projects, roles and credentials (the directory)",
                                   description=__doc__.split("\n\n")[0])
    manage.add_argument("--config", default=None,
                        help="daemon configuration YAML (its ldap_* fields); NOVALAB_LDAP_* variables override it")
    sub = manage.add_subparsers(dest="manage_command", required=True)

    sub.add_parser("init", help="create the root, ou=Users and ou=Groups where missing").set_defaults(
        manage_func=_cmd_init)

    user = sub.add_parser("user", help="create, delete or list users").add_subparsers(dest="user_command", required=True)
    p = user.add_parser("create", help="create a user (keys are generated unless given)")
    p.add_argument("name")
    p.add_argument("--access", default=None, help="access key (default: 20 random hex characters)")
    p.add_argument("--secret", default=None, help="secret key (default: 40 random URL-safe characters)")
    p.add_argument("--admin", action="store_true", help="make the user an administrator (isAdmin)")
    p.set_defaults(manage_func=_cmd_user_create)
    p = user.add_parser("delete", help="delete a user (and its memberships and roles)")
    p.add_argument("name")
    p.set_defaults(manage_func=_cmd_user_delete)
    user.add_parser("list", help="list users").set_defaults(manage_func=_cmd_user_list)

    project = sub.add_parser("project", help="create, delete or list projects; change members").add_subparsers(
        dest="project_command", required=True)
    p = project.add_parser("create", help="create a project; its manager becomes a member")
    p.add_argument("name")
    p.add_argument("manager")
    p.add_argument("--description", default="")
    p.add_argument("--member", action="append", metavar="USER", help="another member (repeatable)")
    p.set_defaults(manage_func=_cmd_project_create)
    p = project.add_parser("delete", help="delete a project and its roles")
    p.add_argument("name")
    p.set_defaults(manage_func=_cmd_project_delete)
    p = project.add_parser("add-member", help="add a user to a project")
    p.add_argument("project")
    p.add_argument("user")
    p.set_defaults(manage_func=_cmd_add_member)
    p = project.add_parser("remove-member", help="remove a user (and its project roles) from a project")
    p.add_argument("project")
    p.add_argument("user")
    p.set_defaults(manage_func=_cmd_remove_member)
    p = project.add_parser("list", help="list projects")
    p.add_argument("--user", default=None, help="only the projects this user is a member of")
    p.set_defaults(manage_func=_cmd_project_list)

    role = sub.add_parser("role", help="give or take a role, globally or in a project").add_subparsers(
        dest="role_command", required=True)
    for verb, func in (("add", _cmd_role_add), ("remove", _cmd_role_remove)):
        p = role.add_parser(verb, help=f"{verb} a role ({', '.join(ROLES)})")
        p.add_argument("user")
        p.add_argument("role", choices=ROLES)
        p.add_argument("--project", default=None, help="a project-local role (cloudadmin and itsec are global only)")
        p.set_defaults(manage_func=func)

    p = sub.add_parser("credentials", help="print the environment file of a user in a project")
    p.add_argument("user")
    p.add_argument("project")
    p.add_argument("--out", default=None, help="write it to this file (mode 600) instead of standard output")
    p.add_argument("--ec2-url", default=None,
                   help=f"the EC2 API (default: from the configuration's api_listen/api_port, {EC2_URL})")
    p.add_argument("--s3-url", default=None,
                   help=f"the object store (default: from objectstore_listen/objectstore_port, {S3_URL})")
    p.set_defaults(manage_func=_cmd_credentials)

    for name, (help_text, configure, handler) in EXTRA_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        configure(p)
        p.set_defaults(manage_extra=handler)
    return manage


def run(args, out=None) -> int:
    """Run the parsed ``novalab manage`` command; -> exit status."""
    out = out if out is not None else sys.stdout
    prog = f"novalab manage {args.manage_command}"
    extra = getattr(args, "manage_extra", None)
    if extra is not None:
        return extra(args)
    from real.config import ConfigError

    try:
        settings = ldap_settings(getattr(args, "config", None))
        with Session.connect(settings) as session:
            return args.manage_func(args, session, out)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (DirectoryUnavailable, InvalidParameterValue) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (DirectoryConflict, NotFound, AuthFailure, NovaError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    """``python -m real.manage ...``: the same commands without the novalab wrapper."""
    parser = argparse.ArgumentParser(prog="novalab")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["manage", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
