"""The 2010 roles and RBAC table: who may call which EC2 action."""

from __future__ import annotations

from types import MappingProxyType

ROLES = ("cloudadmin", "itsec", "sysadmin", "netadmin", "developer")
GLOBAL_ROLES = ("cloudadmin", "itsec")
SUPERUSER_ROLES = ("cloudadmin",)
#: The pseudo-role of a project's manager.
PROJECT_MANAGER = "projectmanager"
ALL = "all"
NONE = "none"
#: cn of each global role group under ou=Groups (2010's ldap_<role> flags).
ROLE_GROUPS = MappingProxyType({
    "cloudadmin": "cloudadmins", "itsec": "itsec", "sysadmin": "sysadmins",
    "netadmin": "netadmins", "developer": "developers",
})

_ANYONE = (
    "DescribeAvailabilityZones", "DescribeRegions", "DescribeSnapshots", "DescribeKeyPairs",
    "CreateKeyPair", "DeleteKeyPair", "DescribeSecurityGroups", "DescribeInstances",
    "DescribeAddresses", "DescribeImages", "DescribeImageAttribute",
)
_NETWORK = (
    "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress", "CreateSecurityGroup",
    "DeleteSecurityGroup", "AllocateAddress", "ReleaseAddress", "AssociateAddress",
    "DisassociateAddress",
)
_SYSTEM = (
    "GetConsoleOutput", "DescribeVolumes", "CreateVolume", "AttachVolume", "DetachVolume",
    "DeleteVolume", "RunInstances", "TerminateInstances", "RebootInstances", "UpdateInstance",
    "DeregisterImage", "RegisterImage", "ModifyImageAttribute", "UpdateImage",
)
#: EC2 action -> the roles that may call it (AUSTIN ``nova/api/ec2/__init__.py``
#: Authorizer). Missing actions (the admin API included) are superuser only.
RBAC = MappingProxyType({
    **{action: (ALL,) for action in _ANYONE},
    **{action: ("netadmin",) for action in _NETWORK},
    **{action: (PROJECT_MANAGER, "sysadmin") for action in _SYSTEM},
})


def roles_for(action: str) -> tuple[str, ...]:
    """The roles that may call ``action`` (``("none",)``: superusers only)."""
    return RBAC.get(action, (NONE,))


def refusal(action: str, roles: tuple[str, ...], project: str, user: str) -> str:
    """The NotAuthorized message: ``action`` needs one of ``roles`` that ``user`` lacks."""
    if roles == (NONE,):
        needs = "a cloud administrator (isAdmin or the cloudadmin role)"
    else:
        needs = "the role " + " or ".join("project manager" if r == PROJECT_MANAGER else r for r in roles)
    return f"{action} needs {needs} in project {project!r}; user {user!r} does not have it"
