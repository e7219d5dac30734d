"""An existing directory: users and groups of a plain LDAP tree (``inetOrgPerson`` and
``groupOfNames``, or Active Directory behind an LDAP proxy), read through an attribute
map instead of the nova schema.

Theory of operation
-------------------
``MappedDirectory(AttributeMap(...))`` answers what the EC2 API and the object store
ask of ``common.directory.Directory`` (``authenticate``, ``authorize``,
``user_by_access_key``, ``get_user``, ``get_project``, ``list_users``,
``list_projects``, ``has_role``), as generators of ``LdapSearch`` effects. It never
writes: users, keys, projects and roles are the site's, kept with its own tools.

- A *user* is an entry of ``user_class`` below ``user_base`` (scope ``user_scope``); its
  name is ``user_name_attr``, its EC2 keys are ``access_key_attr`` and
  ``secret_key_attr`` (the bind DN must be allowed to read the secret).
- A *project* is a group of ``group_class`` directly below ``group_base``, named by
  ``group_name_attr``; its members are the values of ``member_attr``: user DNs
  (``member_value: dn``, ``groupOfNames``) or user names (``member_value: name``,
  ``posixGroup``'s ``memberUid``). Its manager is the value of ``manager_attr``
  (``owner`` for ``groupOfNames``; none: no project has a manager).
- A *role* is a group: ``roles`` maps each 2010 role (cloudadmin, itsec, sysadmin,
  netadmin, developer) to a group DN; a role not mapped is held by nobody. 2010's rule
  stays: a non-global role counts in a project when the user is in the global group
  and, when ``project_role_dn`` is given (a DN template with ``{role}`` and
  ``{project}``), in that project's group too; without it the global group is enough in
  every project the user belongs to. Members of the cloudadmin group are superusers
  (2010's ``isAdmin``): they act in any project.
- Every group a user is in is found with one search (``member_attr`` equal to the
  user's DN or name) below ``group_search_base``, by default the deepest DN that holds
  ``group_base`` and every role group. So ``authenticate`` is three searches (user,
  project, groups) and ``authorize`` after it none: it reads the groups
  ``authenticate`` found.

DNs are compared as LDAP compares them for these purposes: attribute names and values
ignoring case, spaces around ``,``, ``=`` and ``+`` ignored, escapes undone. Values in
filters and DNs are escaped (``common.ldap_escaping``), so a key ``*`` finds nothing.

Deliberate differences from the nova-schema directory: no ``isAdmin`` attribute (the
cloudadmin group decides); two users with one access key are no user at all (as there);
``Project.members`` and ``Project.manager`` hold names where a member DN's first RDN is
``user_name_attr``, and the DN itself otherwise (an Active Directory ``CN=Full Name``):
membership itself is decided by DN, never by those display values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from common.directory import MAX_KEY, UNAUTHENTICATED, Project, User, valid_name
from common.effects import LdapSearch
from common.errors import AuthFailure, InvalidParameterValue, NotAuthorized
from common.ldap_escaping import escape_dn_value, filter_and, filter_eq, split_first_rdn, unescape_dn_value
from common.rbac import ALL, GLOBAL_ROLES, PROJECT_MANAGER, ROLES, SUPERUSER_ROLES, refusal, roles_for

_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
#: RDNs a DN may have: deeper trees than this are not directory trees but mistakes.
MAX_RDNS = 64


def dn_parts(dn: str) -> tuple[str, ...]:
    """``dn`` as its RDNs in comparable form (``attr=value``, both lowercased, the
    value unescaped and stripped), leaf first. ValueError for text that is not a DN."""
    if not isinstance(dn, str) or not dn.strip() or "\x00" in dn:
        raise ValueError(f"not a DN: {dn!r}")
    parts: list[str] = []
    rest = dn
    while rest.strip():
        attr, value, rest = split_first_rdn(rest)
        if not _ATTRIBUTE.match(attr) or not value.strip() or len(parts) >= MAX_RDNS:
            raise ValueError(f"not a DN: {dn!r}")
        parts.append(f"{attr.lower()}={unescape_dn_value(value.strip()).strip().lower()}")
    return tuple(parts)


def dn_key(dn: str) -> str:
    """A comparable form of ``dn`` (see ``dn_parts``); the text itself lowercased when
    it is not a DN, so a malformed member value matches nothing real."""
    try:
        return ",".join(dn_parts(dn))
    except ValueError:
        return dn.lower() if isinstance(dn, str) else ""


def _common_suffix(dns) -> str:
    """The deepest DN that every DN of ``dns`` is at or below ("" when none)."""
    split = [dn_parts(dn)[::-1] for dn in dns]
    common: list[str] = []
    for column in zip(*split, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return ",".join(reversed(common))


@dataclass(frozen=True)
class AttributeMap:
    """Where users, projects and roles are in an existing tree (module docstring)."""

    user_base: str
    group_base: str
    access_key_attr: str
    secret_key_attr: str
    user_class: str = "inetOrgPerson"
    user_name_attr: str = "uid"
    user_scope: str = "subtree"
    group_class: str = "groupOfNames"
    group_name_attr: str = "cn"
    member_attr: str = "member"
    member_value: str = "dn"
    manager_attr: str | None = "owner"
    description_attr: str = "description"
    roles: Mapping[str, str] = field(default_factory=dict)
    project_role_dn: str | None = None
    group_search_base: str | None = None

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "roles", dict(self.roles))  # a copy: the caller's dict may change
        if self.group_search_base is None:
            object.__setattr__(self, "group_search_base", self._default_search_base())

    def problems(self) -> list[str]:
        """Every setting that is wrong, each named (empty: usable)."""
        out = []
        for name in ("user_class", "user_name_attr", "access_key_attr", "secret_key_attr", "group_class",
                     "group_name_attr", "member_attr", "manager_attr", "description_attr"):
            value = getattr(self, name)
            if value is None and name == "manager_attr":
                continue
            if not (isinstance(value, str) and _ATTRIBUTE.match(value)):
                out.append(f"{name}: {value!r} is not an attribute or object class name")
        for name in ("user_base", "group_base", "group_search_base"):
            value = getattr(self, name)
            if value is not None and not _is_dn(value):
                out.append(f"{name}: {value!r} is not a DN")
        if self.user_scope not in ("level", "subtree"):
            out.append(f"user_scope: {self.user_scope!r} is not level or subtree")
        if self.member_value not in ("dn", "name"):
            out.append(f"member_value: {self.member_value!r} is not dn or name")
        for role, dn in dict(self.roles).items():
            if role not in ROLES:
                out.append(f"roles: {role!r} is not a role ({', '.join(ROLES)})")
            elif not _is_dn(dn):
                out.append(f"roles.{role}: {dn!r} is not a DN")
        if self.project_role_dn is not None and not _is_template(self.project_role_dn):
            out.append(f"project_role_dn: {self.project_role_dn!r} is not a DN template with {{role}} and {{project}}")
        return out

    def _default_search_base(self) -> str:
        dns = [self.group_base, *self.roles.values()]
        if self.project_role_dn:
            dns.append(self.project_role_dn.format(role="r", project="p"))
        base = _common_suffix(dns)
        if not base:
            raise ValueError("group_base and the role groups share no suffix: set group_search_base")
        return base


def _is_dn(text) -> bool:
    try:
        dn_parts(text)
    except ValueError:
        return False
    return True


def _is_template(text) -> bool:
    """A DN once ``{role}`` and ``{project}`` (both present, nothing else) are filled in."""
    if not isinstance(text, str) or "{role}" not in text or "{project}" not in text:
        return False
    try:
        return _is_dn(text.format(role="r", project="p"))
    except (KeyError, IndexError, ValueError):
        return False


@dataclass(frozen=True)
class MappedUser(User):
    """A user of an existing tree: its entry's DN and, once ``authenticate`` looked,
    the comparable DNs of every group it is in."""

    dn: str = ""
    groups: frozenset[str] | None = None


@dataclass(frozen=True)
class MappedProject(Project):
    """A project group: its DN and who manages it, in comparable form."""

    dn: str = ""
    manager_key: str = ""


def _first(attrs, name, default=""):
    values = attrs.get(name, ()) if name else ()
    return values[0] if values else default


class MappedDirectory:
    """The read side of ``common.directory.Directory`` over an ``AttributeMap``."""

    def __init__(self, attribute_map: AttributeMap):
        self.map = attribute_map
        m = attribute_map
        self._user_attrs = (m.user_name_attr, m.access_key_attr, m.secret_key_attr)
        self._project_attrs = tuple(a for a in (m.group_name_attr, m.member_attr, m.manager_attr,
                                                m.description_attr) if a)
        self._role_keys = {role: dn_key(dn) for role, dn in m.roles.items()}

    # -- users --------------------------------------------------------------------

    def _user(self, dn, attrs) -> MappedUser:
        m = self.map
        return MappedUser(name=_first(attrs, m.user_name_attr), access_key=_first(attrs, m.access_key_attr),
                          secret_key=_first(attrs, m.secret_key_attr), is_admin=False, dn=dn)

    def _users(self, condition: str):
        m = self.map
        found = yield LdapSearch(m.user_base, filter_and(filter_eq("objectClass", m.user_class), condition),
                                 m.user_scope, self._user_attrs)
        return [self._user(dn, attrs) for dn, attrs in found]

    def user_by_access_key(self, access_key):
        """-> the one MappedUser whose access key is exactly ``access_key``, or None."""
        if not isinstance(access_key, str) or not 1 <= len(access_key) <= MAX_KEY:
            return None
        users = yield from self._users(filter_eq(self.map.access_key_attr, access_key))
        exact = [u for u in users if u.access_key == access_key and u.name]
        return exact[0] if len(exact) == 1 else None

    def get_user(self, name):
        """-> the MappedUser named ``name``, or None (also when two entries claim it)."""
        name = name.name if isinstance(name, User) else name
        if not valid_name(name):
            return None
        users = yield from self._users(filter_eq(self.map.user_name_attr, name))
        exact = [u for u in users if u.name.lower() == name.lower()]
        return exact[0] if len(exact) == 1 else None

    def list_users(self):
        users = yield from self._users(f"({self.map.user_name_attr}=*)")
        return sorted(users, key=lambda u: u.name)

    def member_key(self, user: MappedUser) -> str:
        """How ``user`` appears in a group's ``member_attr``, in comparable form."""
        return dn_key(user.dn) if self.map.member_value == "dn" else user.name.lower()

    def _display(self, value: str) -> str:
        """A member or manager value as a user name where its DN says it."""
        if self.map.member_value == "name":
            return value
        attr, raw, _ = split_first_rdn(value)
        return unescape_dn_value(raw.strip()) if attr.lower() == self.map.user_name_attr.lower() else value

    # -- projects -----------------------------------------------------------------

    def _project(self, dn, attrs) -> MappedProject:
        m = self.map
        manager = _first(attrs, m.manager_attr)
        key = "" if not manager else dn_key(manager) if m.member_value == "dn" else manager.lower()
        return MappedProject(
            name=_first(attrs, m.group_name_attr), manager=self._display(manager) if manager else "",
            description=_first(attrs, m.description_attr),
            members=tuple(sorted(self._display(v) for v in attrs.get(m.member_attr, ()))), dn=dn, manager_key=key)

    def _projects(self, condition: str | None = None):
        m = self.map
        query = filter_eq("objectClass", m.group_class)
        if condition:
            query = filter_and(query, condition)
        found = yield LdapSearch(m.group_base, query, "level", self._project_attrs)
        return [self._project(dn, attrs) for dn, attrs in found]

    def get_project(self, name):
        """-> the MappedProject named ``name`` directly below ``group_base``, or None."""
        name = name.name if isinstance(name, Project) else name
        if not valid_name(name):
            return None
        projects = yield from self._projects(filter_eq(self.map.group_name_attr, name))
        exact = [p for p in projects if p.name.lower() == name.lower()]
        return exact[0] if len(exact) == 1 else None

    def list_projects(self, user=None):
        """-> every project, or those ``user`` (a name or a MappedUser) is a member of."""
        if user is None:
            projects = yield from self._projects()
        else:
            found = user if isinstance(user, MappedUser) else (yield from self.get_user(user))
            if found is None:
                return []
            value = found.dn if self.map.member_value == "dn" else found.name
            projects = yield from self._projects(filter_eq(self.map.member_attr, value))
        return sorted(projects, key=lambda p: p.name)

    # -- roles --------------------------------------------------------------------

    def groups_of(self, user: MappedUser):
        """-> the comparable DNs of every group below ``group_search_base`` that has
        ``user`` as a member (one search)."""
        value = user.dn if self.map.member_value == "dn" else user.name
        found = yield LdapSearch(self.map.group_search_base or "", filter_eq(self.map.member_attr, value),
                                 "subtree", (self.map.group_name_attr,))
        return frozenset(dn_key(dn) for dn, _ in found)

    def _in_role(self, groups, role: str) -> bool:
        key = self._role_keys.get(role)
        return key is not None and key in groups

    def _holds(self, groups, role: str, project: str) -> bool:
        if not self._in_role(groups, role):
            return False
        template = self.map.project_role_dn
        if role in GLOBAL_ROLES or template is None:
            return True
        local = template.format(role=escape_dn_value(role), project=escape_dn_value(project))
        return dn_key(local) in groups

    def _with_groups(self, user: MappedUser):
        if user.groups is not None:
            return user
        groups = yield from self.groups_of(user)
        return replace(user, groups=groups, is_admin=any(self._in_role(groups, r) for r in SUPERUSER_ROLES))

    def has_role(self, user, role, project=None):
        """2010's rule over the role groups (module docstring); ``projectmanager`` is the
        project's ``manager_attr``."""
        found = user if isinstance(user, MappedUser) else (yield from self.get_user(user))
        project_name = project.name if isinstance(project, Project) else project
        if role == PROJECT_MANAGER:
            if project_name is None:
                raise InvalidParameterValue("the projectmanager role needs a project")
            proj = yield from self.get_project(project_name)
            return found is not None and proj is not None and bool(proj.manager_key) \
                and proj.manager_key == self.member_key(found)
        if role not in ROLES:
            raise InvalidParameterValue(f"no role {role!r}: roles are {', '.join(ROLES)}")
        if found is None:
            return False
        found = yield from self._with_groups(found)
        assert found.groups is not None
        return self._in_role(found.groups, role) if project_name is None else \
            self._holds(found.groups, role, project_name)

    # -- requests -----------------------------------------------------------------

    def authenticate(self, access: str, verify: Callable[[User], bool] | None = None):
        """``"<access key>:<project>"`` (no project: the one named like the user) ->
        (MappedUser with its groups, MappedProject); the same AuthFailure answers as
        ``Directory.authenticate``. A cloudadmin may act in any project."""
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
        user = yield from self._with_groups(user)
        assert user.groups is not None
        if not user.is_admin and dn_key(project.dn) not in user.groups:
            raise AuthFailure(f"user {user.name!r} is not a member of project {project.name!r}")
        return user, project

    def authorize(self, user: MappedUser, project: MappedProject, action: str):
        """Return when ``user`` may call ``action`` in ``project``, else NotAuthorized;
        no search when ``user`` came from ``authenticate``."""
        roles = roles_for(action)
        user = yield from self._with_groups(user)
        assert user.groups is not None
        if user.is_admin or ALL in roles:
            return None
        if PROJECT_MANAGER in roles and project.manager_key and project.manager_key == self.member_key(user):
            return None
        for role in roles:
            if role in ROLES and self._holds(user.groups, role, project.name):
                return None
        raise NotAuthorized(refusal(action, roles, project.name, user.name))
