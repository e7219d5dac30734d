"""common.mapped_directory against a plain inetOrgPerson/groupOfNames tree (tests/plain_tree.py)
on ldap3's mock server: who authenticates, in which project, and what each may call."""

import random

import plain_tree
import pytest

from common.directory import UNAUTHENTICATED
from common.distributions import Constant
from common.driving import run_blocking
from common.effects import LdapAdd, LdapSearch
from common.errors import AuthFailure, NotAuthorized
from common.mapped_directory import AttributeMap, MappedDirectory, dn_key
from sim.directory import SimDirectory


class Tree:
    """The plain tree on the mock server; ``run`` drives a generator and counts searches."""

    def __init__(self, mapping=plain_tree.MAP):
        self.server = SimDirectory(None, Constant(0), random.Random(1), plain_tree.ROOT, seed_base=False)
        for dn, classes, attrs in plain_tree.entries():
            self.server.apply(LdapAdd(dn, classes, attrs))
        self.directory = MappedDirectory(AttributeMap(**mapping))
        self.searches = 0

    def perform(self, effect):
        self.searches += isinstance(effect, LdapSearch)
        return self.server.apply(effect)

    def run(self, gen):
        return run_blocking(gen, self.perform)

    def login(self, name, project="demo"):
        access, _ = plain_tree.KEYS[name]
        return self.run(self.directory.authenticate(f"{access}:{project}"))

    def may(self, name, action, project="demo"):
        user, proj = self.login(name, project)
        try:
            self.run(self.directory.authorize(user, proj, action))
        except NotAuthorized:
            return False
        return True


@pytest.fixture
def tree():
    return Tree()


def test_a_member_authenticates_into_the_project_with_three_searches(tree):
    """alice's key finds her entry and the demo group she is a member of, in three searches."""
    user, project = tree.login("alice")
    assert (user.name, user.secret_key, user.is_admin) == ("alice", "alice-secret-key", False)
    assert (project.name, project.manager, project.members) == ("demo", "alice", ("alice", "bob"))
    assert tree.searches == 3


def test_a_user_outside_the_project_is_refused(tree):
    """eve is not in demo's member list: AuthFailure naming her and the project."""
    with pytest.raises(AuthFailure, match="'eve' is not a member of project 'demo'"):
        tree.login("eve")


def test_the_cloudadmin_group_makes_a_superuser(tree):
    """carol is in no project but in cloud-admins: she acts in demo and may call anything."""
    user, _ = tree.login("carol")
    assert user.is_admin and tree.may("carol", "RunInstances") and tree.may("carol", "DescribeUsers")


def test_a_bad_signature_and_an_unknown_key_get_one_answer(tree):
    """A failed proof and a key nobody has give the same AuthFailure; a key '*' is a literal star."""
    for key in ("AK-alice", "*", "nobody"):
        with pytest.raises(AuthFailure, match="do not identify a user"):
            tree.run(tree.directory.authenticate(f"{key}:demo", verify=lambda user: False))
    assert UNAUTHENTICATED.startswith("the access key")
    assert tree.run(tree.directory.user_by_access_key("*")) is None


def test_roles_come_from_groups_and_the_owner_manages(tree):
    """alice (owner, sysadmins, netadmins) may launch and allocate; bob (no role) may only describe."""
    assert tree.may("alice", "RunInstances") and tree.may("alice", "AllocateAddress")
    assert tree.may("bob", "DescribeInstances")
    assert not tree.may("bob", "RunInstances") and not tree.may("bob", "AllocateAddress")


def test_authorize_after_authenticate_searches_nothing(tree):
    """The groups authenticate found are the ones authorize reads."""
    user, project = tree.login("alice")
    before = tree.searches
    tree.run(tree.directory.authorize(user, project, "AllocateAddress"))
    assert tree.searches == before


def test_project_local_role_groups_narrow_a_global_role():
    """With project_role_dn, eve's global netadmin counts in no project without its local group."""
    assert Tree().may("eve", "AllocateAddress", "other")
    tree = Tree(plain_tree.LOCAL_ROLES_MAP)
    assert tree.may("alice", "AllocateAddress")  # netadmins and demo-netadmin
    assert not tree.may("eve", "AllocateAddress", "other")  # netadmins only


def test_lookups_by_name_and_membership(tree):
    """get_user, list_projects(user) and has_role read the same tree."""
    d = tree.directory
    assert tree.run(d.get_user("bob")).access_key == "AK-bob"
    assert [p.name for p in tree.run(d.list_projects("eve"))] == ["other"]
    assert tree.run(d.has_role("alice", "netadmin", "demo")) and not tree.run(d.has_role("bob", "netadmin"))
    assert tree.run(d.has_role("alice", "projectmanager", "demo"))


def test_a_bad_map_names_every_wrong_setting():
    """One ValueError lists each wrong setting of the map."""
    with pytest.raises(ValueError) as caught:
        AttributeMap(user_base="people", group_base=plain_tree.PROJECTS, access_key_attr="employee number",
                     secret_key_attr="employeeType", member_value="uid", roles={"boss": plain_tree.ROLES},
                     project_role_dn="cn={name}," + plain_tree.ROLES)
    for setting in ("user_base", "access_key_attr", "member_value", "roles", "project_role_dn"):
        assert setting in str(caught.value)


def test_dns_compare_ignoring_case_and_spaces():
    """Member DNs written differently by a server still match the user's DN."""
    assert dn_key("UID=Alice , OU=People,DC=example, DC=org") == dn_key("uid=alice,ou=people,dc=example,dc=org")
