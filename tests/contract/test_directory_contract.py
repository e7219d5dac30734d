"""The directory contract: one set of test bodies, run against the simulated directory
(ldap3 MOCK_SYNC, driven through SimPy) and against a private OpenLDAP slapd with the
nova schema, so common.directory behaves the same on both.

A test asks for ``ldap``: a ``Backend`` with an empty tree (root, ou=Users, ou=Groups),
``ldap.run(gen)`` to drive a Directory generator and ``ldap.do(effect)`` to perform one
raw effect. The slapd is started once per session in a temporary directory on a free
port (slapd missing: skipped on a laptop, failed in CI); its tree is emptied after
every test.
"""

import random
import re

import pytest
import simpy
from conftest import service_unavailable

from common.directory import Directory, Project, User
from common.distributions import Constant
from common.effects import DirectoryEffect, LdapAdd, LdapDelete, LdapModify, LdapSearch
from common.errors import (
    AuthFailure,
    DirectoryConflict,
    DirectoryUnavailable,
    InvalidParameterValue,
    NotAuthorized,
    NotFound,
    NovaError,
)
from real.directory import LdapDirectory
from real.slapd import PrivateSlapd, SlapdError, free_port
from sim.directory import SimDirectory, install


class Backend:
    """One directory under test: ``run`` drives a generator, ``do`` one effect."""

    def __init__(self, kind, directory, perform_blocking):
        self.kind = kind
        self.directory = directory
        self._perform = perform_blocking

    def do(self, effect):
        return self.run(self._single(effect))

    @staticmethod
    def _single(effect):
        return (yield effect)

    def run(self, gen):
        return self._perform(gen)


def sim_backend():
    env = simpy.Environment()
    sim = SimDirectory(env, Constant(0.002), random.Random(1))

    def run(gen):
        def drive():
            send = throw = None
            while True:
                try:
                    effect = gen.throw(throw) if throw is not None else gen.send(send)
                except StopIteration as stop:
                    return stop.value
                send = throw = None
                try:
                    send = yield from sim.perform(None, effect)
                except (NovaError, ValueError) as e:
                    throw = e

        process = env.process(drive())
        env.run(until=process)
        return process.value

    backend = Backend("fake", Directory(), run)
    backend.sim = sim
    backend.env = env
    return backend


@pytest.fixture(scope="session")
def private_slapd(tmp_path_factory):
    try:
        slapd = PrivateSlapd(tmp_path_factory.mktemp("slapd"), free_port()).start()
    except SlapdError as e:
        service_unavailable("OpenLDAP slapd", f"{e} (bash real/setup/slapd.sh installs it)")
    yield slapd
    slapd.stop()


def wipe(backend):
    """Delete everything below ou=Users and ou=Groups, children first."""
    d = backend.directory
    for base in (d.users_dn, d.groups_dn):
        found = backend.do(LdapSearch(base, "(objectClass=*)", "subtree", ("objectClass",)))
        for dn, _ in sorted(found, key=lambda e: -e[0].count(",")):
            if dn.lower() != base.lower():
                backend.do(LdapDelete(dn))


@pytest.fixture(params=["fake", "real"])
def ldap(request):
    if request.param == "fake":
        yield sim_backend()
        return
    slapd = request.getfixturevalue("private_slapd")  # only here: the fake needs no slapd
    client = LdapDirectory(slapd.url, slapd.bind_dn, slapd.password, timeout=5)
    backend = Backend("real", Directory(slapd.root), client.run)
    wipe(backend)
    try:
        yield backend
    finally:
        wipe(backend)
        client.close()


def entries(ldap):
    """Every DN below the root (lowercased), to compare whole trees."""
    found = ldap.do(LdapSearch(ldap.directory.root, "(objectClass=*)", "subtree", ("objectClass",)))
    return sorted(dn.lower() for dn, _ in found)


def people(ldap, *names):
    d = ldap.directory
    return [ldap.run(d.create_user(name, f"{name}-key", f"{name}-secret")) for name in names]


# -- users ----------------------------------------------------------------------------


def test_create_get_list_delete_users(ldap):
    d = ldap.directory
    alice = ldap.run(d.create_user("alice", "AK1", "SK1"))
    root = ldap.run(d.create_user("root", "RK1", "RS1", admin=True))
    assert alice == User("alice", "AK1", "SK1", False)
    assert ldap.run(d.get_user("alice")) == alice
    assert ldap.run(d.get_user("ALICE")) == alice  # uid matches ignoring case
    assert ldap.run(d.get_user("root")).is_admin is True
    assert ldap.run(d.list_users()) == [alice, root]
    assert ldap.run(d.delete_user("alice")) is True
    assert ldap.run(d.get_user("alice")) is None
    assert ldap.run(d.delete_user("alice")) is False
    assert ldap.run(d.list_users()) == [root]


def test_delete_of_missing_things_is_false(ldap):
    d = ldap.directory
    assert ldap.run(d.delete_user("ghost")) is False
    assert ldap.run(d.delete_project("ghost")) is False
    people(ldap, "bob")
    assert ldap.run(d.remove_role("bob", "netadmin")) is False
    assert ldap.run(d.remove_role("ghost", "developer")) is False


def test_duplicate_user_is_a_conflict_with_nothing_half_written(ldap):
    d = ldap.directory
    ldap.run(d.create_user("alice", "AK1", "SK1"))
    before = entries(ldap)
    with pytest.raises(DirectoryConflict, match="alice"):
        ldap.run(d.create_user("alice", "OTHER", "SK2"))
    with pytest.raises(DirectoryConflict, match=r"(?i)alice"):
        ldap.run(d.create_user("Alice", "OTHER", "SK2"))  # the DN matches ignoring case
    with pytest.raises(DirectoryConflict, match="access key"):
        ldap.run(d.create_user("bob", "AK1", "SK2"))
    with pytest.raises(DirectoryConflict, match="access key"):
        ldap.run(d.create_user("bob", "ak1", "SK2"))  # keys are unique ignoring case
    assert entries(ldap) == before
    assert ldap.run(d.get_user("alice")) == User("alice", "AK1", "SK1", False)
    assert ldap.run(d.get_user("bob")) is None


def test_out_of_bounds_input_is_refused_before_writing(ldap):
    d = ldap.directory
    before = entries(ldap)
    for args in (("a*", "K", "S"), ("a,b", "K", "S"), ("ok", "has:colon", "S"), ("ok", "nul\x00", "S"),
                 ("ok", "ünï", "S")):
        with pytest.raises(InvalidParameterValue):
            ldap.run(d.create_user(*args))
    assert entries(ldap) == before


# -- escaping (reliability E1) ------------------------------------------------------


def test_filter_specials_in_an_access_key_never_match_another_user(ldap):
    d = ldap.directory
    ldap.run(d.create_user("alice", "plain", "S"))
    ldap.run(d.create_user("bob", "a*b", "S"))
    ldap.run(d.create_user("carol", "x(y)\\z", "S"))
    # Before anyone's key is a literal star, a star finds nobody: it is not a presence filter.
    for probe in ("*", "a*", "*b", "(", ")", "\\", "x(y)", "*)(uid=*", "*)(|(accessKey=*", "pl*", "\\2a",
                  "nul\x00", "plain\x00", "ünï", "PLAIN"):
        assert ldap.run(d.user_by_access_key(probe)) is None, probe
        with pytest.raises(AuthFailure):
            ldap.run(d.authenticate(f"{probe}:alice"))
    assert ldap.run(d.user_by_access_key("plain")).name == "alice"
    assert ldap.run(d.user_by_access_key("a*b")).name == "bob"
    assert ldap.run(d.user_by_access_key("x(y)\\z")).name == "carol"
    ldap.run(d.create_user("star", "*", "S"))
    assert ldap.run(d.user_by_access_key("*")).name == "star"
    assert ldap.run(d.user_by_access_key("a*")) is None


def test_odd_names_find_nothing(ldap):
    d = ldap.directory
    people(ldap, "alice")
    ldap.run(d.create_project("p1", "alice"))
    for name in ("*", "ali*", "alice,ou=Users", "(uid=*)", "a\\b", "nul\x00"):
        assert ldap.run(d.get_user(name)) is None
        assert ldap.run(d.get_project(name)) is None
        assert ldap.run(d.list_projects(name)) == []
        assert ldap.run(d.delete_user(name)) is False


# -- projects and membership --------------------------------------------------------


def test_create_get_list_delete_projects(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob", "carol")
    p1 = ldap.run(d.create_project("p1", "alice", "first project", ["bob"]))
    p2 = ldap.run(d.create_project("p2", "bob"))
    assert p1 == Project("p1", "alice", "first project", ("alice", "bob"))
    assert ldap.run(d.get_project("p1")) == p1
    assert ldap.run(d.get_project("p2")) == Project("p2", "bob", "", ("bob",))
    assert ldap.run(d.list_projects()) == [p1, p2]
    assert [p.name for p in ldap.run(d.list_projects("bob"))] == ["p1", "p2"]
    assert ldap.run(d.list_projects("carol")) == []
    assert ldap.run(d.delete_project("p1")) is True
    assert ldap.run(d.get_project("p1")) is None
    assert ldap.run(d.delete_project("p1")) is False
    assert ldap.run(d.list_projects()) == [p2]


def test_project_needs_existing_people_and_a_free_name(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob")
    with pytest.raises(NotFound, match="ghost"):
        ldap.run(d.create_project("p1", "ghost"))
    with pytest.raises(NotFound, match="ghost"):
        ldap.run(d.create_project("p1", "alice", members=["ghost"]))
    ldap.run(d.create_project("p1", "alice"))
    before = entries(ldap)
    with pytest.raises(DirectoryConflict, match="p1"):
        ldap.run(d.create_project("p1", "bob", "taken", ["bob"]))
    assert entries(ldap) == before
    assert ldap.run(d.get_project("p1")) == Project("p1", "alice", "", ("alice",))
    with pytest.raises(InvalidParameterValue):
        ldap.run(d.create_project("netadmins", "alice"))


def test_membership(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob", "carol")
    ldap.run(d.create_project("p1", "alice"))
    assert ldap.run(d.add_member("p1", "carol")) is True
    assert ldap.run(d.add_member("p1", "carol")) is False
    assert ldap.run(d.get_project("p1")).members == ("alice", "carol")
    assert ldap.run(d.remove_member("p1", "CAROL")) is True
    assert ldap.run(d.remove_member("p1", "carol")) is False
    assert ldap.run(d.get_project("p1")).members == ("alice",)
    with pytest.raises(InvalidParameterValue, match="manager"):
        ldap.run(d.remove_member("p1", "alice"))
    with pytest.raises(NotFound):
        ldap.run(d.add_member("nope", "bob"))
    with pytest.raises(NotFound):
        ldap.run(d.add_member("p1", "ghost"))
    with pytest.raises(NotFound):
        ldap.run(d.remove_member("nope", "bob"))


# -- roles ----------------------------------------------------------------------------


def test_global_and_project_roles(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob")
    ldap.run(d.create_project("p1", "alice", members=["bob"]))
    assert ldap.run(d.has_role("bob", "netadmin")) is False
    assert ldap.run(d.add_role("bob", "netadmin")) is True
    assert ldap.run(d.add_role("bob", "netadmin")) is False
    assert ldap.run(d.has_role("bob", "netadmin")) is True
    assert ldap.run(d.has_role("bob", "netadmin", "p1")) is False  # needs the project role too
    assert ldap.run(d.add_role("bob", "netadmin", "p1")) is True
    assert ldap.run(d.has_role("bob", "netadmin", "p1")) is True
    assert ldap.run(d.has_role("alice", "netadmin", "p1")) is False
    assert ldap.run(d.remove_role("bob", "netadmin")) is True
    assert ldap.run(d.has_role("bob", "netadmin", "p1")) is False  # the global role is gone
    assert ldap.run(d.remove_role("bob", "netadmin")) is False
    # The emptied global group still exists (placeholder member) and can be rejoined.
    assert ldap.run(d.add_role("bob", "netadmin")) is True
    assert ldap.run(d.has_role("bob", "netadmin", "p1")) is True
    assert ldap.run(d.has_role("bob", "projectmanager", "p1")) is False
    assert ldap.run(d.has_role("alice", "projectmanager", "p1")) is True
    ldap.run(d.add_role("alice", "itsec"))
    assert ldap.run(d.has_role("alice", "itsec", "p1")) is True  # global only role
    with pytest.raises(InvalidParameterValue, match="global only"):
        ldap.run(d.add_role("alice", "cloudadmin", "p1"))
    people(ldap, "carol")
    with pytest.raises(InvalidParameterValue, match="not a member"):
        ldap.run(d.add_role("carol", "developer", "p1"))


def test_leaving_a_project_drops_its_roles(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob")
    ldap.run(d.create_project("p1", "alice", members=["bob"]))
    ldap.run(d.add_role("bob", "sysadmin"))
    ldap.run(d.add_role("bob", "sysadmin", "p1"))
    assert ldap.run(d.remove_member("p1", "bob")) is True
    ldap.run(d.add_member("p1", "bob"))
    assert ldap.run(d.has_role("bob", "sysadmin", "p1")) is False


def test_deleting_a_user_or_project_takes_memberships_and_roles_along(ldap):
    d = ldap.directory
    people(ldap, "alice", "bob")
    ldap.run(d.create_project("p1", "alice", members=["bob"]))
    ldap.run(d.add_role("bob", "developer"))
    ldap.run(d.add_role("bob", "developer", "p1"))
    with pytest.raises(InvalidParameterValue, match="p1"):
        ldap.run(d.delete_user("alice"))  # manages p1
    assert ldap.run(d.delete_user("bob")) is True
    assert ldap.run(d.get_project("p1")).members == ("alice",)
    groups = ldap.do(LdapSearch(d.groups_dn, "(member=uid=bob,ou=Users,dc=novalab,dc=local)", "subtree", ("cn",)))
    assert groups == ()
    people(ldap, "bob")  # a new bob inherits nothing
    assert ldap.run(d.has_role("bob", "developer")) is False
    ldap.run(d.add_member("p1", "bob"))
    ldap.run(d.add_role("bob", "developer", "p1"))
    assert ldap.run(d.delete_project("p1")) is True  # with its role group
    assert [dn for dn in entries(ldap) if "cn=p1," in dn] == []
    ldap.run(d.create_project("p1", "alice", members=["bob"]))
    ldap.run(d.add_role("bob", "developer"))
    assert ldap.run(d.has_role("bob", "developer", "p1")) is False


# -- authenticate and authorize -------------------------------------------------------


def test_authenticate_by_access_key(ldap):
    d = ldap.directory
    alice = ldap.run(d.create_user("alice", "AK1", "SK1"))
    ldap.run(d.create_user("bob", "BK1", "SK2"))
    ldap.run(d.create_user("root", "RK1", "SK3", admin=True))
    ldap.run(d.create_project("p1", "alice"))
    ldap.run(d.create_project("alice", "alice"))
    user, project = ldap.run(d.authenticate("AK1:p1"))
    assert (user, project.name) == (alice, "p1")
    assert ldap.run(d.authenticate("AK1"))[1].name == "alice"  # no project: the user's own
    assert ldap.run(d.authenticate("AK1:"))[1].name == "alice"
    with pytest.raises(AuthFailure, match="not a member"):
        ldap.run(d.authenticate("BK1:p1"))
    with pytest.raises(AuthFailure, match="no project"):
        ldap.run(d.authenticate("BK1"))
    with pytest.raises(AuthFailure, match="unknown access key"):
        ldap.run(d.authenticate("nope:p1"))
    assert ldap.run(d.authenticate("RK1:p1"))[0].name == "root"  # admins may enter any project


def test_authorize_follows_the_2010_table(ldap):
    d = ldap.directory
    alice, bob = people(ldap, "alice", "bob")
    root = ldap.run(d.create_user("root", "root-key", "S", admin=True))
    p1 = ldap.run(d.create_project("p1", "alice", members=["bob"]))
    ldap.run(d.add_role("bob", "developer"))
    ldap.run(d.add_role("bob", "developer", "p1"))
    with pytest.raises(NotAuthorized, match=r"AllocateAddress.*netadmin"):
        ldap.run(d.authorize(bob, p1, "AllocateAddress"))
    ldap.run(d.authorize(bob, p1, "DescribeInstances"))
    ldap.run(d.authorize(root, p1, "AllocateAddress"))
    ldap.run(d.authorize(alice, p1, "RunInstances"))  # the project manager
    with pytest.raises(NotAuthorized):
        ldap.run(d.authorize(bob, p1, "RunInstances"))
    ldap.run(d.add_role("bob", "netadmin"))
    ldap.run(d.add_role("bob", "netadmin", "p1"))
    ldap.run(d.authorize(bob, p1, "AllocateAddress"))
    with pytest.raises(NotAuthorized, match="cloud administrator"):
        ldap.run(d.authorize(bob, p1, "RegisterUser"))
    ldap.run(d.add_role("bob", "cloudadmin"))
    ldap.run(d.authorize(bob, p1, "RegisterUser"))


# -- the effects themselves -----------------------------------------------------------


def test_raw_effects_answer_alike(ldap):
    d = ldap.directory
    ou = d.users_dn
    group = f"cn=g,{d.groups_dn}"
    u1 = d.user_dn("u1")
    attrs = {"uid": ("u1",), "cn": ("u1",), "sn": ("u1",)}
    assert ldap.do(LdapAdd(u1, ("inetOrgPerson",), attrs)) is True
    with pytest.raises(DirectoryConflict):
        ldap.do(LdapAdd(u1, ("inetOrgPerson",), attrs))
    with pytest.raises(NotFound):
        ldap.do(LdapAdd(f"uid=x,ou=Nowhere,{d.root}", ("inetOrgPerson",), {"uid": ("x",), "cn": ("x",), "sn": ("x",)}))
    assert ldap.do(LdapSearch(f"ou=Nowhere,{d.root}", "(objectClass=*)", "subtree", ())) == ()
    assert ldap.do(LdapSearch(ou, "(uid=u1)", "level", ("CN", "Sn"))) == ((u1, {"CN": ("u1",), "Sn": ("u1",)}),)
    assert ldap.do(LdapModify(d.user_dn("ghost"), (("replace", "sn", ("x",)),))) is False
    assert ldap.do(LdapModify(u1, (("replace", "sn", ("Smith",)), ("add", "mail", ("a@b.c",))))) is True
    assert ldap.do(LdapSearch(u1, "(objectClass=*)", "base", ("sn", "mail")))[0][1] == {
        "sn": ("Smith",), "mail": ("a@b.c",)}
    with pytest.raises(DirectoryConflict):
        ldap.do(LdapModify(u1, (("add", "mail", ("a@b.c",)),)))
    with pytest.raises(NotFound):
        ldap.do(LdapModify(u1, (("delete", "mail", ("other@b.c",)),)))
    assert ldap.do(LdapAdd(group, ("groupOfNames",), {"cn": ("g",), "member": (u1,)})) is True
    with pytest.raises(DirectoryConflict):  # a groupOfNames keeps at least one member
        ldap.do(LdapModify(group, (("delete", "member", (u1,)),)))
    assert ldap.do(LdapAdd(f"cn=child,{u1}", ("organizationalRole",), {"cn": ("child",)})) is True
    with pytest.raises(DirectoryConflict):  # not a leaf
        ldap.do(LdapDelete(u1))
    assert ldap.do(LdapDelete(f"cn=child,{u1}")) is True
    assert ldap.do(LdapDelete(u1)) is True
    assert ldap.do(LdapDelete(u1)) is False
    found = ldap.do(LdapSearch(d.root, "(objectClass=organizationalUnit)", "subtree", ("ou",)))
    assert [dn for dn, _ in found] == sorted(dn for dn, _ in found) and len(found) == 2


# -- sim-only: install and injected outages ---------------------------------------------


def test_sim_install_registers_the_performer_and_latency_passes():
    class Runtime:
        def __init__(self):
            self.env = simpy.Environment()
            self.handlers = {}

        def register(self, kind, performer):
            self.handlers[kind] = performer

    runtime = Runtime()
    sim = install(runtime, Constant(0.25), random.Random(0))
    assert runtime.handlers == {DirectoryEffect: sim}
    box = {}

    def probe():
        box["found"] = yield from sim.perform(None, LdapSearch(sim.root, "(objectClass=*)", "base", ()))

    runtime.env.process(probe())
    runtime.env.run()
    assert runtime.env.now == 0.25 and len(box["found"]) == 1


def test_sim_outage_raises_directory_unavailable_and_writes_nothing():
    ldap = sim_backend()
    d = ldap.directory
    ldap.sim.available = False
    with pytest.raises(DirectoryUnavailable):
        ldap.run(d.create_user("alice", "AK", "SK"))
    ldap.sim.available = True
    assert ldap.run(d.get_user("alice")) is None


# -- real-only: outages of the server (reliability E2) ---------------------------------


def test_real_stopped_or_stuck_server_is_unavailable_then_recovers(tmp_path):
    import os
    import signal

    try:
        slapd = PrivateSlapd(tmp_path / "slapd", free_port()).start()
    except SlapdError as e:
        service_unavailable("OpenLDAP slapd", f"{e} (bash real/setup/slapd.sh installs it)")
    client = LdapDirectory(slapd.url, slapd.bind_dn, slapd.password, timeout=1)
    d = Directory(slapd.root)
    try:
        client.run(d.create_user("alice", "AK", "SK"))
        os.kill(slapd.process.pid, signal.SIGSTOP)  # stuck: connected, never answers
        try:
            with pytest.raises(DirectoryUnavailable, match=re.escape("127.0.0.1")):
                client.run(d.get_user("alice"))
        finally:
            os.kill(slapd.process.pid, signal.SIGCONT)
        assert client.run(d.get_user("alice")).name == "alice"  # a fresh connection
        slapd.stop()
        with pytest.raises(DirectoryUnavailable, match=slapd.url.rstrip("/")):
            client.run(d.get_user("alice"))
        slapd.start()  # same directory: the configuration and the data are kept
        assert client.run(d.get_user("alice")) == User("alice", "AK", "SK", False)
    finally:
        client.close()
        slapd.stop()
