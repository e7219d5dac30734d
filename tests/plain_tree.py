"""A plain LDAP tree - people as ``inetOrgPerson``, projects and role groups as
``groupOfNames``, no nova schema - and the attribute map that reads it; shared by the
unit tests (ldap3's mock server) and the slapd tests.

    dc=example,dc=org
      ou=people     alice, bob, carol, eve (EC2 keys in employeeNumber / employeeType)
      ou=projects   demo (owner alice; alice, bob), other (owner eve; eve)
      ou=roles      cloud-admins (carol), sysadmins (alice, eve), netadmins (alice, eve),
                    demo-netadmin (alice): a project-local group of project_role_dn
"""

ROOT = "dc=example,dc=org"
PEOPLE = f"ou=people,{ROOT}"
PROJECTS = f"ou=projects,{ROOT}"
ROLES = f"ou=roles,{ROOT}"
#: user -> (access key, secret key)
KEYS = {name: (f"AK-{name}", f"{name}-secret-key") for name in ("alice", "bob", "carol", "eve")}

MAP = {
    "user_base": PEOPLE, "group_base": PROJECTS,
    "access_key_attr": "employeeNumber", "secret_key_attr": "employeeType",
    "roles": {"cloudadmin": f"cn=cloud-admins,{ROLES}", "sysadmin": f"cn=sysadmins,{ROLES}",
              "netadmin": f"cn=netadmins,{ROLES}"},
}
#: MAP with project-local role groups: a role counts in a project only with its group too.
LOCAL_ROLES_MAP = {**MAP, "project_role_dn": "cn={project}-{role}," + ROLES}


def dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


Entry = tuple[str, tuple[str, ...], dict[str, tuple[str, ...]]]


def entries() -> list[Entry]:
    """(dn, object classes, attributes) of the whole tree, parents first."""
    out: list[Entry] = [(ROOT, ("dcObject", "organization"), {"dc": ("example",), "o": ("example",)})]
    for ou in ("people", "projects", "roles"):
        out.append((f"ou={ou},{ROOT}", ("organizationalUnit",), {"ou": (ou,)}))
    for name, (access, secret) in KEYS.items():
        out.append((dn(name), ("inetOrgPerson",), {"uid": (name,), "cn": (name.title(),), "sn": (name,),
                                                   "employeeNumber": (access,), "employeeType": (secret,)}))

    def group(cn, base, members, owner=None):
        attrs: dict[str, tuple[str, ...]] = {"cn": (cn,), "member": tuple(dn(m) for m in members)}
        if owner:
            attrs["owner"] = (dn(owner),)
        out.append((f"cn={cn},{base}", ("groupOfNames",), attrs))

    group("demo", PROJECTS, ("alice", "bob"), owner="alice")
    group("other", PROJECTS, ("eve",), owner="eve")
    group("cloud-admins", ROLES, ("carol",))
    group("sysadmins", ROLES, ("alice", "eve"))
    group("netadmins", ROLES, ("alice", "eve"))
    group("demo-netadmin", ROLES, ("alice",))
    return out
