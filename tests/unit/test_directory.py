"""common.directory driven by hand: the exact LDAP effects, escaping, and the 2010 RBAC
table (no runner, no server)."""

import pytest
from scripted import finish, run, step, throw

from common.directory import PROJECT_ATTRS, UNAUTHENTICATED, USER_ATTRS, Directory, Project, User
from common.effects import LdapAdd, LdapDelete, LdapModify, LdapSearch
from common.errors import (
    AuthFailure,
    DirectoryConflict,
    DirectoryUnavailable,
    InvalidParameterValue,
    NotAuthorized,
    NotFound,
)
from common.ldap_escaping import escape_dn_value, escape_filter_value, filter_eq, unescape_dn_value
from common.rbac import RBAC, ROLES, roles_for

D = Directory()
USERS = "ou=Users,dc=novalab,dc=local"
GROUPS = "ou=Groups,dc=novalab,dc=local"


def user_entry(name, key="AK", secret="SK", admin=False):
    return (f"uid={name},{USERS}", {"uid": (name,), "accessKey": (key,), "secretKey": (secret,),
                                    "isAdmin": ("TRUE" if admin else "FALSE",)})


def project_entry(name, manager, members=(), description=""):
    attrs = {"cn": (name,), "projectManager": (f"uid={manager},{USERS}",),
             "member": tuple(f"uid={m},{USERS}" for m in (manager, *members))}
    if description:
        attrs["description"] = (description,)
    return (f"cn={name},{GROUPS}", attrs)


def key_search(key):
    return LdapSearch(USERS, f"(&(objectClass=novaUser){filter_eq('accessKey', key)})", "level", USER_ATTRS)


def groups_search(name):
    return LdapSearch(GROUPS, f"(member=uid={name},{USERS})", "subtree", ("cn",))


ALICE = User("alice", "AK", "SK", False)
BOB = User("bob", "BK", "BS", False)
ROOT = User("root", "RK", "RS", True)
P1 = Project("p1", "alice", "", ("alice", "bob"))


# -- escaping -----------------------------------------------------------------------


@pytest.mark.parametrize("value, escaped", [
    ("*", "\\2a"),
    ("a*b", "a\\2ab"),
    ("(uid=*)", "\\28uid=\\2a\\29"),
    ("back\\slash", "back\\5cslash"),
    ("nul\x00byte", "nul\\00byte"),
    ("*)(|(uid=*", "\\2a\\29\\28|\\28uid=\\2a"),
    ("plain-key_1.2", "plain-key_1.2"),
    ("Ünïcödé", "Ünïcödé"),
])
def test_filter_values_are_escaped_rfc4515(value, escaped):
    """\\ * ( ) and NUL become \\5c \\2a \\28 \\29 \\00; everything else stays."""
    assert escape_filter_value(value) == escaped
    assert filter_eq("accessKey", value) == f"(accessKey={escaped})"


def test_filter_eq_refuses_bad_attribute_names_and_non_strings():
    with pytest.raises(ValueError):
        filter_eq("accessKey)(uid=*", "x")
    with pytest.raises(TypeError):
        filter_eq("uid", b"bytes")


@pytest.mark.parametrize("value, escaped", [
    ("alice", "alice"),
    ("a,b", "a\\,b"),
    ("a+b=c", "a\\+b\\=c"),
    ('q"<>;', 'q\\"\\<\\>\\;'),
    ("#lead", "\\#lead"),
    (" both ", "\\ both\\ "),
    ("nul\x00", "nul\\00"),
    ("back\\slash", "back\\\\slash"),
])
def test_dn_values_are_escaped_rfc4514_and_round_trip(value, escaped):
    assert escape_dn_value(value) == escaped
    assert unescape_dn_value(escaped) == value


def test_dns_of_the_tree():
    d = Directory("dc=example,dc=com")
    assert d.user_dn("alice") == "uid=alice,ou=Users,dc=example,dc=com"
    assert d.project_dn("p1") == "cn=p1,ou=Groups,dc=example,dc=com"
    assert d.role_dn("netadmin") == "cn=netadmins,ou=Groups,dc=example,dc=com"
    assert d.role_dn("netadmin", "p1") == "cn=netadmin,cn=p1,ou=Groups,dc=example,dc=com"
    assert d.name_from_dn("uid=a\\,b,ou=users,DC=example,dc=com", "uid", d.users_dn) == "a,b"
    assert d.name_from_dn("cn=x,ou=Users,dc=example,dc=com", "uid", d.users_dn) is None
    with pytest.raises(ValueError):
        Directory("uid=x,dc=com")


# -- users --------------------------------------------------------------------------


def test_lookup_by_access_key_is_one_escaped_search():
    gen = D.user_by_access_key("*")
    assert step(gen) == LdapSearch(USERS, "(&(objectClass=novaUser)(accessKey=\\2a))", "level", USER_ATTRS)
    assert finish(gen, ()) is None


def test_lookup_matches_exactly_and_refuses_ambiguity():
    """A search answer that only matches ignoring case is not the user; two users with
    one key (a lost race) is nobody."""
    _effects, found = run(D.user_by_access_key("AK"), (user_entry("alice", "ak"),))
    assert found is None
    _, found = run(D.user_by_access_key("AK"), (user_entry("alice", "AK", admin=True),))
    assert found == User("alice", "AK", "SK", True)
    _, found = run(D.user_by_access_key("AK"), (user_entry("alice", "AK"), user_entry("eve", "AK")))
    assert found is None


@pytest.mark.parametrize("key", ["", None, "x" * 129, 42])
def test_lookup_with_an_impossible_key_finds_nothing_without_asking(key):
    assert finish(D.user_by_access_key(key)) is None


@pytest.mark.parametrize("name", ["a*", "(x)", "a,b", "", "x" * 65, "-lead", "nul\x00", None])
def test_get_user_with_an_impossible_name_finds_nothing_without_asking(name):
    assert finish(D.get_user(name)) is None


def test_get_user_is_one_base_search():
    gen = D.get_user("alice")
    assert step(gen) == LdapSearch(f"uid=alice,{USERS}", "(objectClass=novaUser)", "base", USER_ATTRS)
    assert finish(gen, (user_entry("alice"),)) == ALICE


def test_create_user_checks_the_key_adds_and_checks_again():
    gen = D.create_user("alice", "AK", "SK")
    assert step(gen) == key_search("AK")
    add = step(gen, ())
    assert add == LdapAdd(
        f"uid=alice,{USERS}", ("person", "organizationalPerson", "inetOrgPerson", "novaUser"),
        {"uid": ("alice",), "cn": ("alice",), "sn": ("alice",), "accessKey": ("AK",), "secretKey": ("SK",),
         "isAdmin": ("FALSE",)})
    assert step(gen, True) == key_search("AK")
    assert finish(gen, (user_entry("alice"),)) == ALICE


def test_create_user_with_a_taken_key_writes_nothing():
    """The key is unique ignoring case, like the schema's caseIgnoreMatch."""
    gen = D.create_user("alice", "AK", "SK")
    step(gen)
    with pytest.raises(DirectoryConflict, match="bob"):
        step(gen, (user_entry("bob", "ak"),))


def test_create_user_with_a_taken_name_is_a_conflict():
    gen = D.create_user("alice", "AK", "SK")
    step(gen)
    step(gen, ())
    with pytest.raises(DirectoryConflict, match="already exists"):
        throw(gen, DirectoryConflict("entryAlreadyExists"))


def test_create_user_that_lost_a_race_for_the_key_deletes_itself():
    gen = D.create_user("alice", "AK", "SK")
    step(gen)
    step(gen, ())
    step(gen, True)
    assert step(gen, (user_entry("alice"), user_entry("eve", "AK"))) == LdapDelete(f"uid=alice,{USERS}")
    with pytest.raises(DirectoryConflict, match="eve"):
        step(gen, True)


@pytest.mark.parametrize("name, key, secret", [
    ("a*", "AK", "SK"), ("ok", "has:colon", "SK"), ("ok", "has space", "SK"), ("ok", "", "SK"),
    ("ok", "AK", ""), ("ok", "nul\x00", "SK"), ("ok", "ünï", "SK"), ("ok", "k" * 129, "SK"),
])
def test_create_user_refuses_out_of_bounds_input_before_any_effect(name, key, secret):
    with pytest.raises(InvalidParameterValue):
        step(D.create_user(name, key, secret))


def test_create_user_allows_filter_specials_in_keys():
    """``*()\\`` are printable: allowed, and escaped wherever they are searched."""
    gen = D.create_user("star", "*", "SK")
    assert step(gen) == key_search("*")
    assert key_search("*").filter == "(&(objectClass=novaUser)(accessKey=\\2a))"


def test_delete_user_leaves_groups_then_deletes_children_then_itself():
    dn = f"uid=bob,{USERS}"
    gen = D.delete_user("bob")
    step(gen)  # get_user
    assert step(gen, (user_entry("bob"),)) == LdapSearch(GROUPS, f"(member={dn})", "subtree",
                                                         ("objectClass", "cn", "projectManager"))
    groups = (project_entry("p1", "alice", ("bob",)), (f"cn=developers,{GROUPS}", {"cn": ("developers",)}))
    assert step(gen, groups) == LdapModify(f"cn=p1,{GROUPS}", (("delete", "member", (dn,)),))
    assert step(gen, True) == LdapModify(f"cn=developers,{GROUPS}", (("delete", "member", (dn,)),))
    assert throw(gen, NotFound("gone meanwhile")) == LdapSearch(dn, "(objectClass=*)", "level", ("objectClass",))
    assert step(gen, ((f"cn=key1,{dn}", {}),)) == LdapDelete(f"cn=key1,{dn}")
    assert step(gen, True) == LdapDelete(dn)
    assert finish(gen, True) is True


def test_delete_user_refuses_a_project_manager_and_missing_is_false():
    gen = D.delete_user("alice")
    step(gen)
    step(gen, (user_entry("alice"),))
    with pytest.raises(InvalidParameterValue, match="p1"):
        step(gen, (project_entry("p1", "alice"),))
    _, deleted = run(D.delete_user("ghost"), ())
    assert deleted is False


# -- projects -----------------------------------------------------------------------


def test_create_project_looks_members_up_once_and_adds_one_entry():
    gen = D.create_project("p1", "alice", "first", ["bob"])
    assert step(gen) == LdapSearch(USERS, "(&(objectClass=novaUser)(|(uid=alice)(uid=bob)))", "level", USER_ATTRS)
    assert step(gen, (user_entry("alice"), user_entry("bob"))) == LdapAdd(
        f"cn=p1,{GROUPS}", ("groupOfNames", "novaProject"),
        {"cn": ("p1",), "projectManager": (f"uid=alice,{USERS}",),
         "member": (f"uid=alice,{USERS}", f"uid=bob,{USERS}"), "description": ("first",)})
    assert finish(gen, True) == Project("p1", "alice", "first", ("alice", "bob"))


def test_create_project_needs_existing_users_and_a_free_name():
    gen = D.create_project("p1", "alice", members=["ghost"])
    step(gen)
    with pytest.raises(NotFound, match="ghost"):
        step(gen, (user_entry("alice"),))
    gen = D.create_project("p1", "alice")
    step(gen)
    step(gen, (user_entry("alice"),))
    with pytest.raises(DirectoryConflict, match="p1"):
        throw(gen, DirectoryConflict("entryAlreadyExists"))
    with pytest.raises(InvalidParameterValue, match="reserved"):
        step(D.create_project("developers", "alice"))


def test_get_and_list_projects():
    gen = D.get_project("p1")
    assert step(gen) == LdapSearch(f"cn=p1,{GROUPS}", "(objectClass=novaProject)", "base", PROJECT_ATTRS)
    assert finish(gen, (project_entry("p1", "alice", ("bob",)),)) == P1
    gen = D.list_projects("bob")
    assert step(gen) == LdapSearch(GROUPS, f"(&(objectClass=novaProject)(member=uid=bob,{USERS}))", "level",
                                   PROJECT_ATTRS)
    assert finish(gen, (project_entry("p2", "bob"), project_entry("p1", "alice", ("bob",)))) == [
        P1, Project("p2", "bob", "", ("bob",))]
    assert finish(D.list_projects("a*")) == []


def test_delete_project_removes_role_groups_first_and_retries_once_more_on_a_new_one():
    dn = f"cn=p1,{GROUPS}"
    gen = D.delete_project("p1")
    assert step(gen) == LdapSearch(dn, "(objectClass=*)", "level", ("objectClass",))
    assert step(gen, ((f"cn=netadmin,{dn}", {}),)) == LdapDelete(f"cn=netadmin,{dn}")
    assert step(gen, True) == LdapDelete(dn)
    assert throw(gen, DirectoryConflict("notAllowedOnNonLeaf")) == LdapSearch(dn, "(objectClass=*)", "level",
                                                                            ("objectClass",))
    assert step(gen, ()) == LdapDelete(dn)
    assert finish(gen, True) is True
    _, deleted = run(D.delete_project("ghost"), (), False)
    assert deleted is False


def test_membership_changes():
    gen = D.add_member("p1", "bob")
    step(gen)
    assert step(gen, (user_entry("bob"),)) == LdapModify(f"cn=p1,{GROUPS}", (("add", "member", (f"uid=bob,{USERS}",)),))
    assert finish(gen, True) is True
    gen = D.add_member("p1", "bob")
    step(gen)
    step(gen, (user_entry("bob"),))
    try:
        throw(gen, DirectoryConflict("attributeOrValueExists"))
    except StopIteration as stop:
        assert stop.value is False
    gen = D.add_member("ghost", "bob")
    step(gen)
    step(gen, (user_entry("bob"),))
    with pytest.raises(NotFound, match="ghost"):
        step(gen, False)  # the modify found no such entry


def test_remove_member_drops_project_roles_and_refuses_the_manager():
    bob = f"uid=bob,{USERS}"
    gen = D.remove_member("p1", "bob")
    step(gen)
    assert step(gen, (project_entry("p1", "alice", ("bob",)),)) == LdapSearch(
        f"cn=p1,{GROUPS}", f"(member={bob})", "level", ("cn",))
    assert step(gen, ((f"cn=sysadmin,cn=p1,{GROUPS}", {}),)) == LdapModify(
        f"cn=sysadmin,cn=p1,{GROUPS}", (("delete", "member", (bob,)),))
    assert step(gen, True) == LdapModify(f"cn=p1,{GROUPS}", (("delete", "member", (bob,)),))
    assert finish(gen, True) is True
    gen = D.remove_member("p1", "alice")
    step(gen)
    with pytest.raises(InvalidParameterValue, match="manager"):
        step(gen, (project_entry("p1", "alice", ("bob",)),))


# -- roles --------------------------------------------------------------------------


def test_add_role_creates_the_group_on_first_use_with_a_placeholder():
    group = f"cn=netadmins,{GROUPS}"
    gen = D.add_role("bob", "netadmin")
    step(gen)
    assert step(gen, (user_entry("bob"),)) == LdapModify(group, (("add", "member", (f"uid=bob,{USERS}",)),))
    assert step(gen, False) == LdapAdd(group, ("groupOfNames",), {"cn": ("netadmins",),
                                                                  "member": (group, f"uid=bob,{USERS}")})
    assert finish(gen, True) is True


def test_add_role_in_a_project_needs_a_member_and_a_project_role():
    with pytest.raises(InvalidParameterValue, match="global only"):
        step(D.add_role("bob", "cloudadmin", "p1"))
    with pytest.raises(InvalidParameterValue, match="no role"):
        step(D.add_role("bob", "wizard"))
    gen = D.add_role("carol", "netadmin", "p1")
    step(gen)
    step(gen, (user_entry("carol"),))
    with pytest.raises(InvalidParameterValue, match="not a member"):
        step(gen, (project_entry("p1", "alice", ("bob",)),))
    gen = D.add_role("bob", "netadmin", "p1")
    step(gen)
    step(gen, (user_entry("bob"),))
    assert step(gen, (project_entry("p1", "alice", ("bob",)),)) == LdapModify(
        f"cn=netadmin,cn=p1,{GROUPS}", (("add", "member", (f"uid=bob,{USERS}",)),))


def test_remove_role_is_one_modify_and_absent_is_false():
    gen = D.remove_role("bob", "developer", "p1")
    assert step(gen) == LdapModify(f"cn=developer,cn=p1,{GROUPS}", (("delete", "member", (f"uid=bob,{USERS}",)),))
    try:
        throw(gen, NotFound("noSuchAttribute"))
    except StopIteration as stop:
        assert stop.value is False


def test_has_role_needs_the_global_role_and_in_a_project_the_local_one_too():
    netadmins, local = f"cn=netadmins,{GROUPS}", f"cn=netadmin,cn=p1,{GROUPS}"
    gen = D.has_role("bob", "netadmin", "p1")
    assert step(gen) == groups_search("bob")
    assert finish(gen, ((netadmins, {}),)) is False
    assert run(D.has_role("bob", "netadmin", "p1"), ((netadmins, {}), (local, {})))[1] is True
    assert run(D.has_role("bob", "netadmin"), ((netadmins, {}),))[1] is True
    assert run(D.has_role("bob", "netadmin", "p1"), ((local, {}),))[1] is False
    # itsec is global: the project does not matter
    assert run(D.has_role("bob", "itsec", "p1"), ((f"cn=itsec,{GROUPS}", {}),))[1] is True


# -- authenticate -------------------------------------------------------------------


def test_authenticate_resolves_key_then_project():
    gen = D.authenticate("AK:p1")
    assert step(gen) == key_search("AK")
    assert step(gen, (user_entry("alice"),)) == LdapSearch(f"cn=p1,{GROUPS}", "(objectClass=novaProject)", "base",
                                                           PROJECT_ATTRS)
    assert finish(gen, (project_entry("p1", "alice", ("bob",)),)) == (ALICE, P1)


def test_authenticate_without_a_project_uses_the_users_name():
    gen = D.authenticate("AK")
    step(gen)
    assert step(gen, (user_entry("alice"),)).base == f"cn=alice,{GROUPS}"


def test_authenticate_failures():
    gen = D.authenticate("*:p1")
    assert step(gen) == key_search("*")
    with pytest.raises(AuthFailure, match="unknown access key"):
        step(gen, ())
    gen = D.authenticate("AK:nope")
    step(gen)
    step(gen, (user_entry("carol"),))
    with pytest.raises(AuthFailure, match="no project"):
        step(gen, ())
    gen = D.authenticate("AK:p1")
    step(gen)
    step(gen, (user_entry("carol"),))
    with pytest.raises(AuthFailure, match="not a member"):
        step(gen, (project_entry("p1", "alice", ("bob",)),))


def test_an_admin_outside_the_project_authenticates():
    _, (user, project) = run(D.authenticate("RK:p1"), (user_entry("root", "RK", admin=True),),
                             (project_entry("p1", "alice", ("bob",)),))
    assert user.is_admin and project.name == "p1"


def test_directory_errors_reach_the_caller():
    gen = D.authenticate("AK:p1")
    step(gen)
    with pytest.raises(DirectoryUnavailable):
        throw(gen, DirectoryUnavailable("LDAP at ldap://x/ is not answering"))


# -- authorize (RBAC) ---------------------------------------------------------------


def test_rbac_table_is_2010s():
    assert roles_for("AllocateAddress") == ("netadmin",)
    assert roles_for("RunInstances") == ("projectmanager", "sysadmin")
    assert roles_for("DescribeInstances") == ("all",)
    assert roles_for("RegisterUser") == ("none",)
    for action in ("AssociateAddress", "DisassociateAddress", "ReleaseAddress"):
        assert RBAC[action] == ("netadmin",)
    for action in ("TerminateInstances", "RebootInstances", "GetConsoleOutput", "RegisterImage"):
        assert RBAC[action] == ("projectmanager", "sysadmin")
    for action in ("DescribeImages", "CreateKeyPair", "DescribeKeyPairs", "DeleteKeyPair", "DescribeAddresses",
                   "DescribeAvailabilityZones"):
        assert RBAC[action] == ("all",)
    assert ROLES == ("cloudadmin", "itsec", "sysadmin", "netadmin", "developer")


def test_developer_is_refused_allocate_address():
    gen = D.authorize(BOB, P1, "AllocateAddress")
    assert step(gen) == groups_search("bob")
    developer = ((f"cn=developers,{GROUPS}", {}), (f"cn=developer,cn=p1,{GROUPS}", {}))
    with pytest.raises(NotAuthorized, match="AllocateAddress needs the role netadmin"):
        step(gen, developer)


def test_netadmin_in_the_project_may_allocate():
    groups = ((f"cn=netadmins,{GROUPS}", {}), (f"cn=netadmin,cn=p1,{GROUPS}", {}))
    assert run(D.authorize(BOB, P1, "AllocateAddress"), groups)[1] is None
    with pytest.raises(NotAuthorized):
        run(D.authorize(BOB, P1, "AllocateAddress"), ((f"cn=netadmins,{GROUPS}", {}),))


def test_admins_everyone_and_managers_pass_without_a_round_trip():
    assert finish(D.authorize(ROOT, P1, "AllocateAddress")) is None
    assert finish(D.authorize(ROOT, P1, "RegisterUser")) is None
    assert finish(D.authorize(BOB, P1, "DescribeInstances")) is None
    assert finish(D.authorize(ALICE, P1, "RunInstances")) is None


def test_cloudadmin_role_is_superuser_and_sysadmin_runs_instances():
    assert run(D.authorize(BOB, P1, "RegisterUser"), ((f"cn=cloudadmins,{GROUPS}", {}),))[1] is None
    sysadmin = ((f"cn=sysadmins,{GROUPS}", {}), (f"cn=sysadmin,cn=p1,{GROUPS}", {}))
    assert run(D.authorize(BOB, P1, "TerminateInstances"), sysadmin)[1] is None


def test_unknown_actions_are_for_superusers_only():
    gen = D.authorize(BOB, P1, "FormatAllDisks")
    step(gen)
    with pytest.raises(NotAuthorized, match="cloud administrator"):
        step(gen, ())


def test_with_a_verifier_an_unknown_key_and_a_bad_signature_say_the_same():
    """Given verify, unknown key and failed check are one message, before any project search."""
    gen = D.authenticate("*:nosuchproject", verify=lambda user: True)
    step(gen)
    with pytest.raises(AuthFailure) as unknown:
        step(gen, ())
    gen = D.authenticate("AK:nosuchproject", verify=lambda user: False)
    step(gen)
    with pytest.raises(AuthFailure) as unsigned:
        step(gen, (user_entry("carol"),))  # no project search follows
    assert str(unknown.value) == str(unsigned.value) == UNAUTHENTICATED


def test_after_a_good_signature_project_errors_may_name_the_project():
    """Once verified, an unknown project or a non-member is said plainly."""
    gen = D.authenticate("AK:p1", verify=lambda user: user.secret_key == "SK")
    step(gen)
    step(gen, (user_entry("carol"),))
    with pytest.raises(AuthFailure, match="not a member of project 'p1'"):
        step(gen, (project_entry("p1", "alice", ("bob",)),))
