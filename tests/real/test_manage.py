"""``novalab manage`` end to end against a private slapd: users, projects, roles and the
credentials file, as an operator runs them (argument parsing, output, exit status)."""

import argparse
import os
import stat

import pytest
from conftest import service_unavailable

from common.directory import Directory
from common.effects import LdapDelete, LdapSearch
from real import manage
from real.directory import LdapDirectory
from real.slapd import PrivateSlapd, SlapdError, free_port


@pytest.fixture(scope="session")
def private_slapd(tmp_path_factory):
    try:
        slapd = PrivateSlapd(tmp_path_factory.mktemp("slapd-manage"), free_port()).start()
    except SlapdError as e:
        service_unavailable("OpenLDAP slapd", f"{e} (bash real/setup/slapd.sh installs it)")
    yield slapd
    slapd.stop()


def _wipe(slapd):
    d = Directory(slapd.root)
    with LdapDirectory(slapd.url, slapd.bind_dn, slapd.password) as ldap:
        for base in (d.users_dn, d.groups_dn):
            found = ldap.perform(None, LdapSearch(base, "(objectClass=*)", "subtree", ("objectClass",)))
            for dn, _ in sorted(found, key=lambda e: -e[0].count(",")):
                if dn.lower() != base.lower():
                    ldap.perform(None, LdapDelete(dn))


@pytest.fixture
def slapd(private_slapd, monkeypatch):
    """The private slapd, empty, with NOVALAB_LDAP_* pointing at it."""
    _wipe(private_slapd)
    monkeypatch.setenv("NOVALAB_LDAP_URL", private_slapd.url)
    monkeypatch.setenv("NOVALAB_LDAP_BIND_DN", private_slapd.bind_dn)
    monkeypatch.setenv("NOVALAB_LDAP_PASSWORD", private_slapd.password)
    monkeypatch.setenv("NOVALAB_LDAP_ROOT", private_slapd.root)
    yield private_slapd
    _wipe(private_slapd)


def cli(capsys, *argv):
    """Run ``novalab manage ARGV`` as the novalab CLI mounts it; -> (status, out, err)."""
    parser = argparse.ArgumentParser(prog="novalab")
    manage.add_parser(parser.add_subparsers(dest="command", required=True))
    status = manage.run(parser.parse_args(["manage", *argv]))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fields(text):
    return dict(line.split(": ", 1) for line in text.strip().splitlines())


def env_file(text):
    return dict(line.split("=", 1) for line in text.strip().splitlines())


def test_operator_sets_up_a_project_and_gets_credentials(slapd, capsys, tmp_path):
    status, out, _ = cli(capsys, "init")
    assert status == 0 and "0 base entries created" in out
    status, out, _ = cli(capsys, "user", "create", "alice")
    assert status == 0
    alice = fields(out)
    assert alice["name"] == "alice" and alice["admin"] == "no"
    assert len(alice["access_key"]) == 20 and len(alice["secret_key"]) == 40
    status, out, _ = cli(capsys, "user", "create", "bob", "--access", "BK-1", "--secret", "BS-1")
    assert status == 0 and fields(out)["access_key"] == "BK-1"
    assert cli(capsys, "user", "create", "root", "--admin")[0] == 0
    status, out, _ = cli(capsys, "project", "create", "p1", "alice", "--member", "bob", "--description", "demo")
    assert status == 0 and "members alice,bob" in out
    status, out, _ = cli(capsys, "project", "list")
    assert status == 0 and out.splitlines()[1].split() == ["p1", "alice", "alice,bob", "demo"]
    status, out, _ = cli(capsys, "user", "list")
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "alice", "bob", "root"]
    assert alice["secret_key"] not in out  # secrets are not listed

    status, out, _ = cli(capsys, "credentials", "alice", "p1")
    assert status == 0
    env = env_file(out)
    assert env == {
        "EC2_ACCESS_KEY": f"{alice['access_key']}:p1",
        "EC2_SECRET_KEY": alice["secret_key"],
        "EC2_URL": "http://127.0.0.1:8773/services/Cloud",
        "S3_URL": "http://127.0.0.1:3333",
        "AWS_ACCESS_KEY_ID": f"{alice['access_key']}:p1",
        "AWS_SECRET_ACCESS_KEY": alice["secret_key"],
        "AWS_DEFAULT_REGION": "nova",
        "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:8773/services/Cloud",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:3333",
        "ST_AUTH": "http://127.0.0.1:3333/auth/v1.0",
        "ST_USER": "p1:alice",
        "ST_KEY": alice["secret_key"],
    }
    # The printed credentials authenticate as the API will check them.
    with manage.Session.connect(manage.ldap_settings()) as session:
        user, project = session.run(session.directory.authenticate(env["EC2_ACCESS_KEY"]))
    assert (user.name, user.secret_key, project.name) == ("alice", env["EC2_SECRET_KEY"], "p1")

    out_file = tmp_path / "novarc"
    status, out, err = cli(capsys, "credentials", "bob", "p1", "--out", str(out_file))
    assert status == 0 and out == "" and str(out_file) in err
    assert env_file(out_file.read_text())["EC2_ACCESS_KEY"] == "BK-1:p1"
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600


def test_roles_and_membership_commands(slapd, capsys):
    for name in ("alice", "bob", "carol"):
        cli(capsys, "user", "create", name)
    cli(capsys, "project", "create", "p1", "alice", "--member", "bob")
    status, out, _ = cli(capsys, "role", "add", "bob", "netadmin", "--project", "p1")
    assert status == 0 and "also has the global netadmin role" in out
    assert cli(capsys, "role", "add", "bob", "netadmin")[0] == 0
    status, out, _ = cli(capsys, "role", "add", "bob", "netadmin")
    assert status == 0 and "already had" in out
    with manage.Session.connect(manage.ldap_settings()) as session:
        d = session.directory
        bob = session.run(d.get_user("bob"))
        p1 = session.run(d.get_project("p1"))
        session.run(d.authorize(bob, p1, "AllocateAddress"))
    status, _, err = cli(capsys, "role", "add", "carol", "developer", "--project", "p1")
    assert status == 2 and "not a member" in err
    assert cli(capsys, "project", "add-member", "p1", "carol")[0] == 0
    status, out, _ = cli(capsys, "project", "list", "--user", "carol")
    assert "p1" in out
    assert cli(capsys, "role", "remove", "bob", "netadmin", "--project", "p1")[0] == 0
    status, _, err = cli(capsys, "role", "remove", "bob", "netadmin", "--project", "p1")
    assert status == 1 and "does not have" in err
    assert cli(capsys, "project", "remove-member", "p1", "carol")[0] == 0
    status, _, err = cli(capsys, "project", "remove-member", "p1", "alice")
    assert status == 2 and "manager" in err
    status, _, err = cli(capsys, "credentials", "carol", "p1")
    assert status == 1 and "not a member" in err
    assert cli(capsys, "project", "delete", "p1")[0] == 0
    assert cli(capsys, "project", "delete", "p1")[0] == 1
    assert cli(capsys, "user", "delete", "carol")[0] == 0
    status, _, err = cli(capsys, "user", "delete", "carol")
    assert status == 1 and "no user" in err


def test_refusals_have_exit_statuses_and_name_the_problem(slapd, capsys, monkeypatch):
    cli(capsys, "user", "create", "alice", "--access", "AK")
    status, _, err = cli(capsys, "user", "create", "alice")
    assert status == 1 and "already exists" in err
    status, _, err = cli(capsys, "user", "create", "eve", "--access", "ak")
    assert status == 1 and "access key" in err
    status, _, err = cli(capsys, "user", "create", "bad*name")
    assert status == 2 and "not allowed" in err
    status, _, err = cli(capsys, "project", "create", "p1", "ghost")
    assert status == 1 and "ghost" in err

    monkeypatch.setenv("NOVALAB_LDAP_PASSWORD", "wrong")
    status, _, err = cli(capsys, "user", "list")
    assert status == 2 and slapd.url in err and "wrong" not in err
    dead = f"ldap://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("NOVALAB_LDAP_URL", dead)
    monkeypatch.setenv("NOVALAB_LDAP_TIMEOUT", "2")
    status, _, err = cli(capsys, "user", "list")
    assert status == 2 and dead in err


def test_functions_are_the_commands(slapd):
    with manage.Session.connect(manage.ldap_settings()) as session:
        alice = manage.user_create(session, "alice")
        assert manage.user_create(session, "bob", "BK", "BS").access_key == "BK"
        project = manage.project_create(session, "p1", "alice", "demo", ["bob"])
        assert project.members == ("alice", "bob")
        assert manage.project_list(session, "bob") == [project]
        assert manage.role_add(session, "bob", "sysadmin") is True
        text = manage.credentials(session, "alice", "p1", ec2_url="http://api:8773/services/Cloud")
        assert f"EC2_ACCESS_KEY={alice.access_key}:p1\n" in text
        assert "EC2_URL=http://api:8773/services/Cloud\n" in text
        assert manage.project_remove_member(session, "p1", "bob") is True
        assert manage.project_delete(session, "p1") is True
        assert manage.user_delete(session, "bob") is True
        assert [u.name for u in manage.user_list(session)] == ["alice"]


def test_settings_come_from_the_environment():
    settings = manage.ldap_settings(environ={"NOVALAB_LDAP_ROOT": "dc=example,dc=com",
                                             "NOVALAB_LDAP_PASSWORD": "pw", "NOVALAB_LDAP_TIMEOUT": "3"})
    assert settings.url == "ldap://127.0.0.1:389/"
    assert settings.bind_dn == "cn=admin,dc=example,dc=com"
    assert (settings.password, settings.timeout) == ("pw", 3.0)
    assert "pw" not in repr(settings)


def test_other_subcommands_plug_in(monkeypatch, capsys):
    monkeypatch.setattr(manage, "EXTRA_COMMANDS", {})
    seen = {}

    def configure(parser):
        parser.add_argument("cidr")

    def handler(args):
        seen["cidr"] = args.cidr
        return 0

    manage.register_command("network", "create fixed networks", configure, handler)
    status, _, _ = cli(capsys, "network", "10.0.0.0/16")
    assert status == 0 and seen == {"cidr": "10.0.0.0/16"}
