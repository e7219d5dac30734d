"""The directory: users, projects, roles and the 2010 RBAC table, as generators of LDAP
effects (``LdapSearch``, ``LdapAdd``, ``LdapModify``, ``LdapDelete``).

Theory of operation
-------------------
Every method of ``Directory`` that talks to the directory is a generator: it yields one
LDAP effect per round trip and gets the result (or the error) back from the runner,
exactly like the managers. The sim performs the effects on ldap3's MOCK_SYNC server
(``sim/directory.py``), real mode on OpenLDAP (``real/directory.py``).

Directory information tree (REDIS-era ``ldapdriver.py``; root ``R`` defaults to
``dc=novalab,dc=local``)::

    R
    ou=Users,R
      uid=<user>,ou=Users,R          person, organizationalPerson, inetOrgPerson, novaUser:
                                     uid, cn, sn, accessKey, secretKey, isAdmin TRUE|FALSE
    ou=Groups,R
      cn=<role group>,ou=Groups,R    global role (groupOfNames): cloudadmins, itsec,
                                     sysadmins, netadmins, developers
      cn=<project>,ou=Groups,R       novaProject (SUP groupOfNames): cn, projectManager,
                                     description, member (the manager is always one)
        cn=<role>,cn=<project>,...   project-local role (groupOfNames)

Roles follow 2010: ``has_role(user, role)`` is membership of the global role group;
``has_role(user, role, project)`` for a non-global role needs the global group *and*
the project-local one (``cloudadmin`` and ``itsec`` are global only). The superuser is
a user with ``isAdmin`` or the global ``cloudadmin`` role. ``authorize`` applies the
AUSTIN ``Authorizer`` table (``RBAC``): ``all`` passes everyone, ``projectmanager`` is
the project's manager, an action missing from the table is for superusers only.

Escaping (reliability E1, ``common.ldap_escaping``): every value that goes into a search filter goes through
``filter_eq`` (RFC 4515: ``\\ * ( )`` and NUL become ``\\5c \\2a \\28 \\29 \\00``), so
an access key ``*`` is an equality assertion on a literal star and never a presence
filter; every value in a DN goes through ``escape_dn_value`` (RFC 4514). Lookups with
odd characters simply find nothing. Creation is stricter: user and project names are
``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``, access and secret keys are 1-128 printable ASCII
characters (no space; an access key has no ``:``, the separator of ``access:project``).
Access keys are unique ignoring case (the schema's ``caseIgnoreMatch``); a lookup
matches exactly.

Deliberate differences from 2010, each to close a race or a hole:

- Role groups carry their own DN as a placeholder member and are never deleted when the
  last user leaves (2010 deleted the group on ``OBJECT_CLASS_VIOLATION``, which loses a
  concurrent ``add_role``). They go with their project.
- ``create_user`` checks the access key before and after the add; when a concurrent
  create took the same key, it deletes its own entry and raises DirectoryConflict, so no
  two users ever keep one key (both creates may fail; neither is reported as done). A
  lookup that finds two users for one key finds nothing.
- Removing the manager from a project, or deleting a user who manages a project, is
  refused (the manager is always a member).
- ``remove_member`` also drops the user's project-local roles, so they do not come back
  when the user is added again; ``add_role`` with a project needs a member.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from common.effects import LdapAdd, LdapDelete, LdapModify, LdapSearch
from common.errors import (
    AuthFailure,
    DirectoryConflict,
    InvalidParameterValue,
    NotAuthorized,
    NotFound,
)
from common.ldap_escaping import (
    compared_dn,
    escape_dn_value,
    filter_and,
    filter_eq,
    filter_or,
    split_first_rdn,
    unescape_dn_value,
)
from common.rbac import (
    ALL,
    GLOBAL_ROLES,
    PROJECT_MANAGER,
    ROLE_GROUPS,
    ROLES,
    SUPERUSER_ROLES,
    refusal,
    roles_for,
)


@dataclass(frozen=True)
class User:
    name: str
    access_key: str
    secret_key: str = field(repr=False)
    is_admin: bool


@dataclass(frozen=True)
class Project:
    name: str
    manager: str
    description: str
    members: tuple[str, ...]


# ---------------------------------------------------------------------------
# Bounds

MAX_NAME = 64
MAX_KEY = 128
MAX_DESCRIPTION = 256
#: The one answer to a caller who cannot prove who they are: the same whether the key is
#: unknown or the signature wrong, so it tells nobody which keys, users or projects exist.
UNAUTHENTICATED = "the access key and signature do not identify a user (check the key, the secret and the signing)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

USER_CLASSES = ("person", "organizationalPerson", "inetOrgPerson", "novaUser")
PROJECT_CLASSES = ("groupOfNames", "novaProject")
GROUP_CLASSES = ("groupOfNames",)
USER_ATTRS = ("uid", "accessKey", "secretKey", "isAdmin")
PROJECT_ATTRS = ("cn", "projectManager", "description", "member")
_IS_USER = filter_eq("objectClass", "novaUser")
_IS_PROJECT = filter_eq("objectClass", "novaProject")


def valid_name(name) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name))


def _printable_ascii(text: str) -> bool:
    return all("\x21" <= ch <= "\x7e" for ch in text)


def check_name(name, what: str) -> None:
    if not valid_name(name):
        raise InvalidParameterValue(
            f"{what} name {name!r} is not allowed: use 1-{MAX_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


def check_access_key(key) -> None:
    if not (isinstance(key, str) and 1 <= len(key) <= MAX_KEY and _printable_ascii(key) and ":" not in key):
        raise InvalidParameterValue(
            f"access key is not allowed: use 1-{MAX_KEY} printable ASCII characters without spaces or ':'")


def check_secret_key(key) -> None:
    if not (isinstance(key, str) and 1 <= len(key) <= MAX_KEY and _printable_ascii(key)):
        raise InvalidParameterValue(f"secret key is not allowed: use 1-{MAX_KEY} printable ASCII characters without spaces")


def _name_of(thing) -> str:
    """A user or project given as its name or as the dataclass."""
    return thing.name if isinstance(thing, (User, Project)) else thing


def _first(attrs, name, default=""):
    values = attrs.get(name, ())
    return values[0] if values else default


class Directory:
    """Users, projects and roles below ``root``; every I/O method is a generator."""

    def __init__(self, root: str = "dc=novalab,dc=local"):
        if not isinstance(root, str) or "\x00" in root:
            raise ValueError(f"not a DN: {root!r}")
        attr, value, _ = split_first_rdn(root)
        if attr.lower() not in ("dc", "o", "ou") or not value:
            raise ValueError(f"the root must start with dc=, o= or ou=, not {root!r}")
        self.root = root
        self.users_dn = f"ou=Users,{root}"
        self.groups_dn = f"ou=Groups,{root}"

    # -- names --------------------------------------------------------------------

    def user_dn(self, name: str) -> str:
        return f"uid={escape_dn_value(name)},{self.users_dn}"

    def project_dn(self, name: str) -> str:
        return f"cn={escape_dn_value(name)},{self.groups_dn}"

    def role_dn(self, role: str, project: str | None = None) -> str:
        if project is None:
            return f"cn={ROLE_GROUPS[role]},{self.groups_dn}"
        return f"cn={escape_dn_value(role)},{self.project_dn(project)}"

    def name_from_dn(self, dn: str, attr: str, parent: str) -> str | None:
        """The value of ``dn``'s first RDN when it is ``attr=...`` directly below
        ``parent`` (compared ignoring case), else None."""
        first, value, rest = split_first_rdn(dn)
        if first.lower() != attr or compared_dn(rest) != compared_dn(parent):
            return None
        return unescape_dn_value(value)

    def base_entries(self):
        """-> [(dn, object classes, attributes)] of the root and the two OUs."""
        attr, value, _ = split_first_rdn(self.root)
        value = unescape_dn_value(value)
        kind = attr.lower()
        if kind == "dc":
            root = (self.root, ("dcObject", "organization"), {"dc": (value,), "o": (value,)})
        elif kind == "o":
            root = (self.root, ("organization",), {"o": (value,)})
        else:
            root = (self.root, ("organizationalUnit",), {"ou": (value,)})
        return [
            root,
            (self.users_dn, ("organizationalUnit",), {"ou": ("Users",)}),
            (self.groups_dn, ("organizationalUnit",), {"ou": ("Groups",)}),
        ]

    def ensure_base(self):
        """Create the root, ou=Users and ou=Groups where missing. Idempotent."""
        created = 0
        for dn, classes, attrs in self.base_entries():
            found = yield LdapSearch(dn, "(objectClass=*)", "base", ("objectClass",))
            if not found:
                try:
                    yield LdapAdd(dn, classes, attrs)
                    created += 1
                except DirectoryConflict:
                    pass  # created meanwhile
        return created

    # -- users --------------------------------------------------------------------

    def _user(self, attrs) -> User:
        return User(
            name=_first(attrs, "uid"),
            access_key=_first(attrs, "accessKey"),
            secret_key=_first(attrs, "secretKey"),
            is_admin=_first(attrs, "isAdmin", "FALSE").upper() == "TRUE",
        )

    def _users_with_key(self, access_key: str):
        """Every user the directory matches on ``access_key`` (its matching rule
        ignores case)."""
        found = yield LdapSearch(
            self.users_dn, filter_and(_IS_USER, filter_eq("accessKey", access_key)),
            "level", USER_ATTRS)
        return [self._user(attrs) for _, attrs in found]

    def user_by_access_key(self, access_key):
        """-> the User whose access key is exactly ``access_key``, or None (also when the
        key is malformed or, after a lost race, two users claim it)."""
        if not isinstance(access_key, str) or not 1 <= len(access_key) <= MAX_KEY:
            return None
        users = yield from self._users_with_key(access_key)
        exact = [user for user in users if user.access_key == access_key]
        return exact[0] if len(exact) == 1 else None

    def get_user(self, name):
        """-> User or None."""
        name = _name_of(name)
        if not valid_name(name):
            return None
        found = yield LdapSearch(self.user_dn(name), _IS_USER, "base", USER_ATTRS)
        return self._user(found[0][1]) if found else None

    def create_user(self, name, access_key, secret_key, admin=False):
        """-> the new User. DirectoryConflict when the name or the access key is taken
        (nothing is left written); InvalidParameterValue for a name or key out of
        bounds."""
        check_name(name, "user")
        check_access_key(access_key)
        check_secret_key(secret_key)
        folded = access_key.lower()
        clash = [u for u in (yield from self._users_with_key(access_key)) if u.access_key.lower() == folded]
        if clash:
            raise DirectoryConflict(f"access key already belongs to user {clash[0].name!r}")
        dn = self.user_dn(name)
        attrs = {
            "uid": (name,), "cn": (name,), "sn": (name,), "accessKey": (access_key,),
            "secretKey": (secret_key,), "isAdmin": ("TRUE" if admin else "FALSE",),
        }
        try:
            yield LdapAdd(dn, USER_CLASSES, attrs)
        except DirectoryConflict:
            raise DirectoryConflict(f"user {name!r} already exists") from None
        others = [u for u in (yield from self._users_with_key(access_key))
                  if u.access_key.lower() == folded and u.name.lower() != name.lower()]
        if others:
            # A concurrent create took the same key between our check and our add.
            yield LdapDelete(dn)
            raise DirectoryConflict(f"access key already belongs to user {others[0].name!r}")
        return User(name, access_key, secret_key, bool(admin))

    def delete_user(self, name):
        """Remove the user from every project and role, delete its children (key pairs)
        and its entry. -> False when there was no such user. InvalidParameterValue when
        the user manages a project."""
        user = yield from self.get_user(name)
        if user is None:
            return False
        dn = self.user_dn(user.name)
        groups = yield LdapSearch(self.groups_dn, filter_eq("member", dn), "subtree",
                                  ("objectClass", "cn", "projectManager"))
        managed = sorted(
            _first(attrs, "cn") for _, attrs in groups
            if _first(attrs, "projectManager").replace(" ", "").lower() == dn.replace(" ", "").lower()
        )
        if managed:
            raise InvalidParameterValue(
                f"user {user.name!r} manages project(s) {', '.join(managed)}: delete them first")
        for group_dn, _ in groups:
            try:
                yield LdapModify(group_dn, (("delete", "member", (dn,)),))
            except NotFound:
                pass  # removed meanwhile
        children = yield LdapSearch(dn, "(objectClass=*)", "level", ("objectClass",))
        for child_dn, _ in children:
            yield LdapDelete(child_dn)
        return (yield LdapDelete(dn))

    def list_users(self):
        found = yield LdapSearch(self.users_dn, _IS_USER, "level", USER_ATTRS)
        return sorted((self._user(attrs) for _, attrs in found), key=lambda u: u.name)

    # -- projects -----------------------------------------------------------------

    def _project(self, attrs) -> Project:
        members = []
        for member_dn in attrs.get("member", ()):
            name = self.name_from_dn(member_dn, "uid", self.users_dn)
            if name is not None:
                members.append(name)
        manager = self.name_from_dn(_first(attrs, "projectManager"), "uid", self.users_dn) or ""
        return Project(
            name=_first(attrs, "cn"), manager=manager, description=_first(attrs, "description"),
            members=tuple(sorted(members)),
        )

    def _valid_project_name(self, name) -> bool:
        return valid_name(name) and name.lower() not in ROLE_GROUPS.values()

    def _users_named(self, names):
        """-> {lowercased name: User} of the users among ``names`` (one search)."""
        found = yield LdapSearch(
            self.users_dn,
            filter_and(_IS_USER, filter_or(*(filter_eq("uid", n) for n in names))),
            "level", USER_ATTRS)
        return {user.name.lower(): user for user in (self._user(attrs) for _, attrs in found)}

    def create_project(self, name, manager, description="", members=()):
        """-> the new Project; the manager is always a member. NotFound when the manager
        or a member does not exist, DirectoryConflict when the project does."""
        check_name(name, "project")
        if name.lower() in ROLE_GROUPS.values():
            raise InvalidParameterValue(f"project name {name!r} is reserved for a role group")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or "\x00" in description:
            raise InvalidParameterValue(f"a project description is at most {MAX_DESCRIPTION} characters")
        manager = _name_of(manager)
        wanted = [manager] + [_name_of(m) for m in members]
        for person in wanted:
            if not valid_name(person):
                raise NotFound(f"no user {person!r}")
        users = yield from self._users_named(wanted)
        chosen = []
        for person in wanted:
            user = users.get(person.lower())
            if user is None:
                raise NotFound(f"no user {person!r}")
            if user not in chosen:
                chosen.append(user)
        attrs = {
            "cn": (name,),
            "projectManager": (self.user_dn(chosen[0].name),),
            "member": tuple(self.user_dn(u.name) for u in chosen),
        }
        if description:
            attrs["description"] = (description,)
        try:
            yield LdapAdd(self.project_dn(name), PROJECT_CLASSES, attrs)
        except DirectoryConflict:
            raise DirectoryConflict(f"project {name!r} already exists") from None
        return Project(name, chosen[0].name, description, tuple(sorted(u.name for u in chosen)))

    def delete_project(self, name):
        """Delete the project and its role groups. -> False when there was none."""
        name = _name_of(name)
        if not self._valid_project_name(name):
            return False
        dn = self.project_dn(name)
        for _ in range(3):
            children = yield LdapSearch(dn, "(objectClass=*)", "level", ("objectClass",))
            for child_dn, _ in children:
                yield LdapDelete(child_dn)
            try:
                return (yield LdapDelete(dn))
            except DirectoryConflict:
                continue  # a role group was created meanwhile: delete it too
        raise DirectoryConflict(f"project {name!r} keeps getting new role groups; not deleted")

    def get_project(self, name):
        """-> Project or None."""
        name = _name_of(name)
        if not self._valid_project_name(name):
            return None
        found = yield LdapSearch(self.project_dn(name), _IS_PROJECT, "base", PROJECT_ATTRS)
        return self._project(found[0][1]) if found else None

    def list_projects(self, user=None):
        """-> every project, or those ``user`` is a member of, by name."""
        query = _IS_PROJECT
        if user is not None:
            user = _name_of(user)
            if not valid_name(user):
                return []
            query = filter_and(query, filter_eq("member", self.user_dn(user)))
        found = yield LdapSearch(self.groups_dn, query, "level", PROJECT_ATTRS)
        return sorted((self._project(attrs) for _, attrs in found), key=lambda p: p.name)

    def add_member(self, project, user):
        """Add ``user`` to ``project``. -> True, False when already a member. NotFound
        when either does not exist."""
        project, user = _name_of(project), _name_of(user)
        if not self._valid_project_name(project):
            raise NotFound(f"no project {project!r}")
        found = yield from self.get_user(user)
        if found is None:
            raise NotFound(f"no user {user!r}")
        try:
            changed = yield LdapModify(self.project_dn(project), (("add", "member", (self.user_dn(found.name),)),))
        except DirectoryConflict:
            return False
        if not changed:
            raise NotFound(f"no project {project!r}")
        return True

    def remove_member(self, project, user):
        """Remove ``user`` (and its project-local roles) from ``project``. -> True,
        False when it was not a member. NotFound for no project; InvalidParameterValue
        for its manager."""
        project, user = _name_of(project), _name_of(user)
        found = yield from self.get_project(project)
        if found is None:
            raise NotFound(f"no project {project!r}")
        member = next((m for m in found.members if isinstance(user, str) and m.lower() == user.lower()), None)
        if member is None:
            return False
        if member.lower() == found.manager.lower():
            raise InvalidParameterValue(f"user {member!r} is the manager of project {found.name!r}")
        dn = self.user_dn(member)
        project_dn = self.project_dn(found.name)
        local = yield LdapSearch(project_dn, filter_eq("member", dn), "level", ("cn",))
        for group_dn, _ in local:
            try:
                yield LdapModify(group_dn, (("delete", "member", (dn,)),))
            except NotFound:
                pass
        try:
            yield LdapModify(project_dn, (("delete", "member", (dn,)),))
        except NotFound:
            return False  # removed meanwhile
        return True

    # -- roles --------------------------------------------------------------------

    def _check_role(self, role, project) -> None:
        if role not in ROLES:
            raise InvalidParameterValue(f"no role {role!r}: roles are {', '.join(ROLES)}")
        if project is not None and role in GLOBAL_ROLES:
            raise InvalidParameterValue(f"the {role} role is global only")

    def add_role(self, user, role, project=None):
        """Give ``user`` ``role`` (globally, or in ``project``, of which it must be a
        member). -> True, False when it already had it."""
        self._check_role(role, project)
        user, project = _name_of(user), _name_of(project)
        found = yield from self.get_user(user)
        if found is None:
            raise NotFound(f"no user {user!r}")
        if project is not None:
            proj = yield from self.get_project(project)
            if proj is None:
                raise NotFound(f"no project {project!r}")
            if found.name.lower() not in (m.lower() for m in proj.members):
                raise InvalidParameterValue(f"user {found.name!r} is not a member of project {proj.name!r}")
            project = proj.name
        group = self.role_dn(role, project)
        dn = self.user_dn(found.name)
        for _ in range(3):
            try:
                changed = yield LdapModify(group, (("add", "member", (dn,)),))
            except DirectoryConflict:
                return False  # already had it
            if changed:
                return True
            cn = role if project is not None else ROLE_GROUPS[role]
            try:
                # The group's own DN is a placeholder member: groupOfNames needs one,
                # and the group then never has to be deleted when its last user leaves.
                yield LdapAdd(group, GROUP_CLASSES, {"cn": (cn,), "member": (group, dn)})
                return True
            except DirectoryConflict:
                continue  # created meanwhile: add to it
        raise DirectoryConflict(f"role group {group} could not be written")

    def remove_role(self, user, role, project=None):
        """-> True when ``user`` had ``role`` (globally or in ``project``) and lost it."""
        self._check_role(role, project)
        user, project = _name_of(user), _name_of(project)
        if not valid_name(user) or (project is not None and not self._valid_project_name(project)):
            return False
        group = self.role_dn(role, project)
        try:
            changed = yield LdapModify(group, (("delete", "member", (self.user_dn(user),)),))
        except NotFound:
            return False
        except DirectoryConflict:
            # A group written without the placeholder refuses to lose its last member
            # (OBJECT_CLASS_VIOLATION): delete it, as 2010 did.
            return (yield LdapDelete(group))
        return bool(changed)

    def _groups_of(self, user: str):
        """-> lowercased DNs of every group below ou=Groups that has ``user`` (one
        search: projects, global and project-local role groups)."""
        found = yield LdapSearch(self.groups_dn, filter_eq("member", self.user_dn(user)), "subtree", ("cn",))
        return frozenset(compared_dn(dn) for dn, _ in found)

    def _in(self, groups, role, project=None) -> bool:
        return compared_dn(self.role_dn(role, project)) in groups

    def _holds(self, groups, role, project: str | None) -> bool:
        if not self._in(groups, role):
            return False
        return project is None or role in GLOBAL_ROLES or self._in(groups, role, project)

    def has_role(self, user, role, project=None):
        """2010 rule: the global role, and for a non-global role in a project also the
        project-local one. ``projectmanager`` is the project's manager."""
        user, project = _name_of(user), _name_of(project)
        if role == PROJECT_MANAGER:
            if project is None:
                raise InvalidParameterValue("the projectmanager role needs a project")
            found = yield from self.get_project(project)
            return found is not None and isinstance(user, str) and found.manager.lower() == user.lower()
        if role not in ROLES:
            raise InvalidParameterValue(f"no role {role!r}: roles are {', '.join(ROLES)}")
        if not valid_name(user) or (project is not None and not self._valid_project_name(project)):
            return False
        groups = yield from self._groups_of(user)
        return self._holds(groups, role, project)

    # -- requests -----------------------------------------------------------------

    def authenticate(self, access: str, verify: Callable[[User], bool] | None = None):
        """``access`` is ``"<access key>:<project>"`` (no ``:``: the user's own
        project) -> (User, Project). AuthFailure for an unknown key, an unknown
        project, or a user outside the project who is not an admin.

        ``verify(user)`` checks the caller's proof (the request's signature) against the
        user found. Given it, an unknown key and a failed check are one AuthFailure with
        one message (UNAUTHENTICATED), raised before the project is looked up, so a
        caller who cannot sign learns nothing about users or projects; the errors after
        it may say more. Without it, checking the signature is the caller's part."""
        key, _, project_name = access.partition(":") if isinstance(access, str) else ("", "", "")
        user = (yield from self.user_by_access_key(key)) if key else None
        if verify is not None and (user is None or not verify(user)):
            raise AuthFailure(UNAUTHENTICATED)
        if user is None:
            raise AuthFailure(f"unknown access key {key!r}" if key else "no access key given")
        project_name = project_name or user.name
        project = yield from self.get_project(project_name)
        if project is None:
            raise AuthFailure(f"no project {project_name!r}")
        if not user.is_admin and user.name.lower() not in (m.lower() for m in project.members):
            raise AuthFailure(f"user {user.name!r} is not a member of project {project.name!r}")
        return user, project

    def authorize(self, user: User, project: Project, action: str):
        """Return when ``user`` may call ``action`` in ``project``; else NotAuthorized
        naming the action and the roles it needs. At most one search."""
        roles = roles_for(action)
        if user.is_admin or ALL in roles:
            return None
        if PROJECT_MANAGER in roles and project.manager.lower() == user.name.lower():
            return None
        groups = yield from self._groups_of(user.name)
        if any(self._in(groups, role) for role in SUPERUSER_ROLES):
            return None
        for role in roles:
            if role in ROLES and self._holds(groups, role, project.name):
                return None
        raise NotAuthorized(refusal(action, roles, project.name, user.name))
