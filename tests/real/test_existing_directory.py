"""An existing directory (issue 15, item 3): a slapd of the test's own loaded with a plain
inetOrgPerson/groupOfNames tree - no nova schema - behind TLS with a CA made here, read
through an attribute map. Signed EC2 requests to the real API authenticate and are
authorized against it, over ldaps:// and StartTLS; a server the CA does not vouch for
gets no password."""

import secrets
import shutil
import subprocess

import plain_tree
import pytest
from conftest import service_unavailable

from common.effects import LdapAdd
from common.errors import DirectoryUnavailable, InvalidParameterValue
from common.mapped_directory import AttributeMap, MappedDirectory
from real.config import DaemonConfig
from real.directory import LdapDirectory
from real.site import production_problems

SERVER_EXTENSIONS = ("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                     "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")


def make_ca(directory):
    """A self-signed CA and a server certificate it signs for 127.0.0.1 -> (ca, cert, key) paths."""
    if shutil.which("openssl") is None:
        service_unavailable("openssl", "not installed")
    ca, ca_key, cert, key, csr = (directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key",
                                                                "server.csr"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=novalab test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(SERVER_EXTENSIONS)
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(directory / "server.ext"))
    return ca, cert, key


@pytest.fixture(scope="module")
def site_ldap(tmp_path_factory):
    """The plain tree on a private slapd with TLS: (slapd, CA file)."""
    from real.slapd import PrivateSlapd, SlapdError, SlapdMissing

    base = tmp_path_factory.mktemp("site-ldap")
    ca, cert, key = make_ca(base)
    slapd = PrivateSlapd(base / "ldap", root=plain_tree.ROOT, nova_schema=False, tls=(str(cert), str(key)))
    try:
        slapd.start()
    except SlapdMissing as e:
        service_unavailable("slapd", str(e))
    except SlapdError as e:
        pytest.fail(f"slapd with TLS did not start: {e}")
    try:
        with LdapDirectory(slapd.url, slapd.bind_dn, slapd.password) as admin:
            for dn, classes, attrs in plain_tree.entries():
                admin.perform(None, LdapAdd(dn, classes, attrs))
        yield slapd, str(ca)
    finally:
        slapd.stop()


def site_config(slapd, ca, redis_url, amqp_url, **overrides) -> DaemonConfig:
    """A daemon configuration reading the plain tree over ldaps:// with the test's CA."""
    settings = {"redis_url": redis_url, "amqp_url": amqp_url, "key_prefix": f"novalab-site-{secrets.token_hex(4)}:",
                "ldap_url": slapd.ldaps_url, "ldap_bind_dn": slapd.bind_dn, "ldap_password": slapd.password,
                "ldap_ca_file": ca, "ldap_map": plain_tree.MAP, "durable_delivery": True, **overrides}
    return DaemonConfig.model_validate(settings)


@pytest.fixture(params=["ldaps", "starttls"])
def api_url(request, site_ldap, redis_url, amqp_url):
    """The EC2 API (real.api.build_api + ApiServer) on the plain tree, over ldaps:// or StartTLS."""
    from real.api import ApiServer, build_api

    slapd, ca = site_ldap
    tls = {} if request.param == "ldaps" else {"ldap_url": slapd.url, "ldap_starttls": True}
    config = site_config(slapd, ca, redis_url, amqp_url, **tls)
    assert production_problems(config.model_copy(update={"production": True}), "api") == []
    api, runtime, close = build_api(config)
    server = ApiServer(api, runtime, port=0).start()
    try:
        yield server.url
    finally:
        server.stop()
        runtime.store.flush()
        close()


def answer(url, user, project="demo", action="DescribeInstances", secret=None, **params):
    """The EC2 code of a signed request as ``user`` in ``project`` ("" for a success)."""
    from real.ec2_client import Ec2Client, Ec2Error

    access, key = plain_tree.KEYS[user]
    client = Ec2Client(url, f"{access}:{project}", secret or key)
    try:
        client.call(action, params)
    except Ec2Error as e:
        return e.code
    finally:
        client.close()
    return ""


def launch(url, user, project="demo"):
    """RunInstances with DryRun: DryRunOperation when authorized, the refusal's code otherwise."""
    return answer(url, user, project, "RunInstances", ImageId="ami-tiny", InstanceType="m1.tiny", MinCount=1,
                  MaxCount=1, DryRun="true")


def test_members_authenticate_and_strangers_do_not(api_url):
    """bob (member) describes demo's instances; eve (not a member) and a wrong secret are AuthFailure."""
    assert answer(api_url, "bob") == ""
    assert answer(api_url, "eve") == "AuthFailure"
    assert answer(api_url, "bob", secret="not-bobs-secret") == "AuthFailure"


def test_groups_decide_what_each_may_call(api_url):
    """The owner and the cloud admin may launch; bob, with no role group, may not."""
    assert launch(api_url, "alice") == "DryRunOperation"
    assert launch(api_url, "carol") == "DryRunOperation"
    assert launch(api_url, "bob") == "UnauthorizedOperation"
    assert answer(api_url, "bob", action="AllocateAddress") == "UnauthorizedOperation"


def test_a_server_the_ca_does_not_vouch_for_gets_no_bind(site_ldap):
    """Without the site's CA (the system's trust only) the ldaps:// and StartTLS binds fail as DirectoryUnavailable."""
    slapd, _ = site_ldap
    directory = MappedDirectory(AttributeMap(**plain_tree.MAP))
    for url, starttls in ((slapd.ldaps_url, False), (slapd.url, True)):
        with LdapDirectory(url, slapd.bind_dn, slapd.password, starttls=starttls) as ldap, \
                pytest.raises(DirectoryUnavailable, match="certificate"):
            ldap.run(directory.get_user("alice"))


def test_the_tree_has_no_nova_schema(site_ldap):
    """The server was loaded without the nova schema: it refuses novaUser (value #1) as an unknown class."""
    slapd, ca = site_ldap
    with LdapDirectory(slapd.ldaps_url, slapd.bind_dn, slapd.password, ca_file=ca) as ldap, \
            pytest.raises(InvalidParameterValue, match="objectClass: value #1 invalid"):
        ldap.perform(None, LdapAdd(f"uid=mallory,{plain_tree.PEOPLE}", ("inetOrgPerson", "novaUser"),
                                   {"uid": ("mallory",), "cn": ("m",), "sn": ("m",)}))
