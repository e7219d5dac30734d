"""The EC2 API for real: boto3's EC2 client, unmodified, against a live deployment.

A module fixture starts a whole small cloud. It runs a private slapd with a project
(``proj1``, managed by ``boss``) and three users: ``ops`` (a member with the netadmin and
sysadmin roles), ``dev`` (a member and plain developer) and ``outsider`` (a member of
another project). It uses Redis under a fresh key prefix and RabbitMQ (a private vhost
when rabbitmqctl is at hand). It runs network and compute daemons as processes
(``python -m real.cli``, FlatDHCP inside a private network namespace, libvirt's test
driver) and the API server on a free port. Everything is stopped and removed at the
end.

Every action is called once through boto3. Every bad input must come back as a 4xx
with its EC2 code, and must leave the store as it was: no instance record, the same
free addresses, fixed and floating, and the same quota use.
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlencode, urlsplit

import pytest
import yaml
from conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "proj1"
FLOATING_RANGE = "198.51.100.0/29"  # TEST-NET-2: 6 addresses
QUOTA = {"instances": 3, "cores": 6, "floating_ips": 2}
BOOT_TIMEOUT = 60.0
HEARTBEAT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
EC2_NS = "{http://ec2.amazonaws.com/doc/2010-08-31/}"


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def _requirements():
    missing = []
    for module in ("boto3", "cheroot", "ldap3", "libvirt", "cryptography"):
        try:
            __import__(module)
        except ImportError as e:
            missing.append(f"{module} ({e})")
    if missing:
        service_unavailable("the EC2 API test's Python packages", ", ".join(missing))
    if os.geteuid() != 0:
        service_unavailable("Linux networking", "the network daemon works in a network namespace, which needs root")
    tools = [t for t in ("ip", "iptables", "dnsmasq") if not shutil.which(t, path=os.environ["PATH"] + ":/usr/sbin:/sbin")]
    if tools:
        service_unavailable("Linux networking", f"missing {', '.join(tools)} (bash real/setup/linux_net.sh)")


class Cloud:
    """One deployment: start() brings it up, stop() takes all of it down."""

    def __init__(self, redis_url, amqp_url, tmp: Path):
        self.tag = secrets.token_hex(3)
        self.tmp = tmp
        self.redis_url = redis_url
        self.amqp_url = amqp_url
        self.vhost = None
        self.netns = f"nlapi{self.tag}"
        self.bridge = f"brapi{self.tag}"
        self.state_dir = tempfile.mkdtemp(prefix=f"novalab-ec2-{self.tag}-")
        os.chmod(self.state_dir, 0o755)  # dnsmasq rereads its hosts file as nobody
        self.processes: dict = {}
        self.cleanups: list = []
        self.users: dict = {}
        self.access_log: list = []

    # -- bring up -------------------------------------------------------------------------

    def start(self):
        self._private_vhost()
        self._namespace()
        self._directory()
        self._config()
        self._store()
        self._daemons()
        self._api()

    def _private_vhost(self):
        """A vhost of our own keeps our 'compute' and 'network' queues away from any
        other test run on the same broker (the shared vhost when none can be made)."""
        from real import vhosts

        vhost = f"novalab-ec2-{self.tag}"
        url = vhosts.private_vhost(self.amqp_url, vhost)
        if url is None:
            return
        self.vhost = vhost
        self.cleanups.append(lambda: vhosts.delete_vhost(vhost))
        self.amqp_url = url

    def _namespace(self):
        sh("ip", "netns", "add", self.netns)
        self.cleanups.append(lambda: sh("ip", "netns", "del", self.netns, check=False))
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        # eth0 takes the floating addresses (the managers' public_interface); its peer
        # is the bridge's uplink (bridge_interface).
        sh("ip", "-n", self.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "nlup0")
        for link in ("eth0", "nlup0"):
            sh("ip", "-n", self.netns, "link", "set", link, "up")

    def _directory(self):
        from common.directory import Directory
        from real.directory import LdapDirectory
        from real.slapd import PrivateSlapd, SlapdError

        try:
            self.slapd = PrivateSlapd(self.tmp / "ldap").start()
        except SlapdError as e:
            service_unavailable("slapd", str(e))
        self.cleanups.append(self.slapd.stop)
        directory = Directory(self.slapd.root)
        for name in ("boss", "ops", "dev", "outsider"):
            self.users[name] = (f"AK{name.upper()}{self.tag}", secrets.token_urlsafe(24))
        with LdapDirectory(self.slapd.url, self.slapd.bind_dn, self.slapd.password) as ldap:
            for name, (access, secret) in self.users.items():
                ldap.run(directory.create_user(name, access, secret))
            ldap.run(directory.create_project(PROJECT, "boss", "the EC2 API test", members=("ops", "dev")))
            ldap.run(directory.create_project("elsewhere", "outsider"))
            # dev's own project: an access key without ":<project>" means it (curl's case).
            ldap.run(directory.create_project("dev", "dev"))
            for role in ("netadmin", "sysadmin"):
                ldap.run(directory.add_role("ops", role))
                ldap.run(directory.add_role("ops", role, PROJECT))
            ldap.run(directory.add_role("dev", "developer"))
            ldap.run(directory.add_role("dev", "developer", PROJECT))

    def _config(self):
        from real.config import DaemonConfig

        self.config = DaemonConfig(
            redis_url=self.redis_url, amqp_url=self.amqp_url, key_prefix=f"novalab-ec2test-{self.tag}:",
            libvirt_uri="test:///default", instances_path=str(self.tmp / "instances"), workers=2,
            report_interval=1.0, service_down_time=10.0, periodic_interval=2.0, build_timeout=60.0,
            network_manager="flatdhcp", fixed_range="10.77.0.0/26", flat_network_bridge=self.bridge,
            bridge_interface="nlup0", netns=self.netns, net_state_dir=self.state_dir, public_interface="eth0",
            ldap_url=self.slapd.url, ldap_bind_dn=self.slapd.bind_dn, ldap_password=self.slapd.password,
            ldap_root=self.slapd.root,
            # Durable only on a vhost of our own: the shared one keeps the transport's default.
            durable_delivery=self.vhost is not None,
        )
        self.config_path = self.tmp / "daemon-config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(), sort_keys=True))

    def _store(self):
        from common import floating, images
        from real.runner import Agent
        from real.startup import connect

        self.store, runtime = connect(self.config)
        self.cleanups.append(self.store.close)
        self.cleanups.append(self.store.flush)
        runtime.drive(Agent("setup"), floating.create_floating_ips("net1", FLOATING_RANGE))
        runtime.drive(Agent("setup"), images.register_defaults(["ami-tiny"], from_objects=False))
        runtime.close()

    def _daemons(self):
        from real import processes
        from real.libvirt_driver import LibvirtDriver

        for kind, host in (("network", "net1"), ("compute", "hostA")):
            env = {}
            if kind == "compute":
                env["NOVALAB_LIBVIRT_URI"] = LibvirtDriver.test_uri_for_host(self.tmp / "nodes", host, 8, 16384)
            self.processes[(kind, host)] = processes.start_daemon(kind, host, self.config_path, self.tmp / "logs", env=env)
        self.cleanups.append(self._stop_daemons)
        try:
            processes.wait_for_heartbeats(self.store, self.processes, HEARTBEAT_TIMEOUT, self.tmp / "logs")
        except processes.DeployError as e:
            pytest.fail(str(e))

    def _api(self):
        from common.cloud import Quota
        from real.api import ApiServer, build_api

        api, runtime, close = build_api(
            self.config, quotas={PROJECT: Quota(**QUOTA)}, network_call_timeout=20.0,
        )
        self.cleanups.append(close)
        self.api = api

        def access_log(line):
            self.access_log.append(line)
            print(line, file=sys.stderr)

        self.server = ApiServer(api, runtime, reap_interval=1.0, access_log=access_log).start()
        self.cleanups.append(self.server.stop)

    # -- take down ------------------------------------------------------------------------

    def _stop_daemons(self):
        from real import processes

        processes.stop_processes(self.processes.values(), STOP_TIMEOUT)

    def _stop_dnsmasq(self):
        pid_file = Path(self.state_dir) / f"nova-{self.bridge}.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if self.state_dir.encode() in cmdline:  # ours, not a recycled pid
            os.kill(pid, signal.SIGTERM)

    def stop(self):
        # Run in reverse: dnsmasq (found by its pid file) first, then its directory.
        self.cleanups.insert(0, lambda: shutil.rmtree(self.state_dir, ignore_errors=True))
        self.cleanups.append(self._stop_dnsmasq)
        problems = []
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as e:  # keep cleaning up; report at the end
                problems.append(f"{cleanup}: {e}")
        if not self.vhost:
            from real import transport

            try:
                transport.delete_queues(self.amqp_url, ["compute", "compute.hostA", "network", "network.net1"])
            except Exception as e:
                problems.append(f"delete queues: {e}")
        assert not problems, problems

    # -- helpers --------------------------------------------------------------------------

    def log(self, kind, host):
        path = self.tmp / "logs" / f"{kind}-{host}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def client(self, user="ops", access=None, secret=None, project=PROJECT):
        import boto3

        user_access, user_secret = self.users[user]
        return boto3.client(
            "ec2", endpoint_url=self.server.url, region_name="nova",
            aws_access_key_id=access if access is not None else f"{user_access}:{project}",
            aws_secret_access_key=secret if secret is not None else user_secret,
        )

    def snapshot(self):
        """What bad input must not change."""
        from common import keypairs, keys
        from common.effects import HGetAll, SCard, SMembers, ZRangeByScore

        execute = self.store.execute
        networks = sorted(execute(SMembers(keys.NETWORKS)))
        return {
            "instances": execute(SMembers(keys.INSTANCES)),
            "fixed_free": {n: execute(SCard(keys.available(n))) for n in networks},
            "floating_free": len(execute(ZRangeByScore(keys.floating_available("net1"), "-inf", "+inf"))),
            "floating_held": execute(SMembers(keys.project_floatingips(PROJECT))),
            # Counters: a reservation undone leaves "0" where there was nothing.
            "usage": {k: int(v) for k, v in execute(HGetAll(keys.project_usage(PROJECT))).items() if int(v)},
            "keypairs": execute(HGetAll(keypairs.user_keypairs("ops"))),
        }


@pytest.fixture(scope="module")
def cloud(redis_url, amqp_url, tmp_path_factory):
    _requirements()
    deployment = Cloud(redis_url, amqp_url, tmp_path_factory.mktemp("ec2api"))
    try:
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    yield deployment
    deployment.stop()


def code_of(error):
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


def wait_for_state(client, instance_id, wanted, timeout=BOOT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        found = client.describe_instances(InstanceIds=[instance_id])
        state = found["Reservations"][0]["Instances"][0]["State"]["Name"]
        if state in wanted:
            return found["Reservations"][0]["Instances"][0]
        assert state not in ("error",), found
        if time.monotonic() > deadline:
            raise AssertionError(f"{instance_id} still {state} after {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def running(cloud):
    """One running m1.tiny of proj1 with a key pair and user data; terminated after."""
    ec2 = cloud.client("ops")
    ec2.create_key_pair(KeyName="boot-key")
    reservation = ec2.run_instances(ImageId="ami-tiny", InstanceType="m1.tiny", MinCount=1, MaxCount=1,
                                    KeyName="boot-key", UserData="#!/bin/sh\necho hello\n")
    instance_id = reservation["Instances"][0]["InstanceId"]
    instance = wait_for_state(ec2, instance_id, {"running"})
    yield instance
    ec2.terminate_instances(InstanceIds=[instance_id])
    ec2.delete_key_pair(KeyName="boot-key")


# ---------------------------------------------------------------------------
# Bad input: a 4xx with the EC2 code, and nothing created


def _stale(ec2):
    old = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(hours=1)
    with mock.patch("botocore.auth.get_current_datetime", lambda remove_tzinfo=True: old):
        return ec2.describe_instances()


RUN = {"ImageId": "ami-tiny", "InstanceType": "m1.tiny", "MinCount": 1, "MaxCount": 1}

BAD = {
    "wrong secret": (lambda c: c.client("ops", secret="not-the-secret").run_instances(**RUN), "AuthFailure", 401),
    "unknown access key": (lambda c: c.client("ops", access=f"AKNOBODY:{PROJECT}").run_instances(**RUN),
                           "AuthFailure", 401),
    "stale timestamp": (lambda c: _stale(c.client("ops")), "AuthFailure", 401),
    "user outside the project": (lambda c: c.client("outsider").run_instances(**RUN), "AuthFailure", 401),
    "developer allocates an address": (lambda c: c.client("dev").allocate_address(), "UnauthorizedOperation", 403),
    "developer runs an instance": (lambda c: c.client("dev").run_instances(**RUN), "UnauthorizedOperation", 403),
    "MinCount > MaxCount": (lambda c: c.client("ops").run_instances(**{**RUN, "MinCount": 2, "MaxCount": 1}),
                            "InvalidParameterValue", 400),
    "over quota": (lambda c: c.client("ops").run_instances(**{**RUN, "MinCount": 4, "MaxCount": 4}),
                   "InstanceLimitExceeded", 400),
    "unknown image": (lambda c: c.client("ops").run_instances(**{**RUN, "ImageId": "ami-nothere"}),
                      "InvalidAMIID.NotFound", 400),
    "unknown instance type": (lambda c: c.client("ops").run_instances(**{**RUN, "InstanceType": "m9.huge"}),
                              "InvalidParameterValue", 400),
    "unknown key pair": (lambda c: c.client("ops").run_instances(**{**RUN, "KeyName": "no-such-key"}),
                         "InvalidKeyPair.NotFound", 400),
    "oversize user data": (lambda c: c.client("ops").run_instances(**{**RUN, "UserData": "x" * (16 * 1024 + 1)}),
                           "InvalidParameterValue", 400),
    "terminate unknown ids": (lambda c: c.client("ops").terminate_instances(InstanceIds=["i-nothere1", "i-nothere2"]),
                              "InvalidInstanceID.NotFound", 400),
    "reboot unknown id": (lambda c: c.client("ops").reboot_instances(InstanceIds=["i-nothere"]),
                          "InvalidInstanceID.NotFound", 400),
    "describe unknown id": (lambda c: c.client("ops").describe_instances(InstanceIds=["i-nothere"]),
                            "InvalidInstanceID.NotFound", 400),
    "console of unknown id": (lambda c: c.client("ops").get_console_output(InstanceId="i-nothere"),
                              "InvalidInstanceID.NotFound", 400),
    "malformed instance id": (lambda c: c.client("ops").terminate_instances(InstanceIds=["instance:1"]),
                              "InvalidInstanceID.Malformed", 400),
    "release an address not held": (lambda c: c.client("ops").release_address(PublicIp="198.51.100.6"),
                                     "InvalidAddress.NotFound", 400),
    "associate with an unknown instance": (
        lambda c: c.client("ops").associate_address(PublicIp="198.51.100.6", InstanceId="i-nothere"),
        "InvalidAddress.NotFound", 400),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_a_4xx_with_its_code_and_creates_nothing(cloud, name):
    from botocore.exceptions import ClientError

    call, code, status = BAD[name]
    before = cloud.snapshot()
    with pytest.raises(ClientError) as caught:
        call(cloud)
    assert code_of(caught.value) == (code, status), caught.value.response
    assert cloud.snapshot() == before


@pytest.mark.parametrize("access", ["*", "AK*", f"*:{PROJECT}", "(", ")", "\\", "*)(uid=*", "AKOPS*", "a\\2a"])
def test_access_keys_with_filter_characters_never_authenticate(cloud, access):
    """Signed with ops' real secret: if any of these matched ops (or anyone), it would pass."""
    from botocore.exceptions import ClientError

    _, secret = cloud.users["ops"]
    key = access if ":" in access else f"{access}:{PROJECT}"
    with pytest.raises(ClientError) as caught:
        cloud.client(access=key.replace("AKOPS", cloud.users["ops"][0]), secret=secret).describe_instances()
    assert code_of(caught.value) == ("AuthFailure", 401)


def test_unauthenticated_callers_all_get_one_message(cloud):
    """Unknown key, wrong secret, unknown project: one AuthFailure naming no user or project."""
    from botocore.exceptions import ClientError

    ops_access, _ = cloud.users["ops"]
    outsider_access, _ = cloud.users["outsider"]
    messages = set()
    for access in ("AKNOBODY:nosuchproject", f"{ops_access}:nosuchproject", f"{outsider_access}:{PROJECT}"):
        with pytest.raises(ClientError) as caught:
            cloud.client(access=access, secret="not-the-secret").describe_instances()
        assert code_of(caught.value) == ("AuthFailure", 401)
        messages.add(caught.value.response["Error"]["Message"])
    (message,) = messages
    assert "nosuchproject" not in message and "outsider" not in message and PROJECT not in message


# ---------------------------------------------------------------------------
# Every action once


def test_describe_availability_zones_and_images(cloud):
    ec2 = cloud.client("dev")
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"], z["RegionName"]) for z in zones] == [("nova", "available", "nova")]
    images = ec2.describe_images()["Images"]
    assert [(i["ImageId"], i["State"], i["Public"], i["OwnerId"]) for i in images] == [
        ("ami-tiny", "available", True, "novalab")]


def test_key_pairs(cloud):
    from botocore.exceptions import ClientError
    from cryptography.hazmat.primitives import serialization

    ec2 = cloud.client("dev")
    created = ec2.create_key_pair(KeyName="laptop")
    key = serialization.load_pem_private_key(created["KeyMaterial"].encode(), password=None)
    blob = base64.b64decode(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                          serialization.PublicFormat.OpenSSH).split()[1])
    digest = hashlib.md5(blob).hexdigest()
    assert created["KeyFingerprint"] == ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    listed = ec2.describe_key_pairs()["KeyPairs"]
    assert [(k["KeyName"], k["KeyFingerprint"]) for k in listed] == [("laptop", created["KeyFingerprint"])]
    assert cloud.client("ops").describe_key_pairs()["KeyPairs"] == []  # key pairs are per user
    with pytest.raises(ClientError) as caught:
        ec2.create_key_pair(KeyName="laptop")
    assert code_of(caught.value) == ("InvalidKeyPair.Duplicate", 400)
    ec2.delete_key_pair(KeyName="laptop")
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    with pytest.raises(ClientError) as caught:
        ec2.describe_key_pairs(KeyNames=["laptop"])
    assert code_of(caught.value) == ("InvalidKeyPair.NotFound", 400)


def test_run_describe_console_and_reboot(cloud, running):
    ec2 = cloud.client("ops")
    assert running["State"]["Name"] == "running"
    assert running["KeyName"] == "boot-key"
    assert running["PrivateIpAddress"].startswith("10.77.0.")
    assert running["Placement"]["AvailabilityZone"] == "nova"
    from common import keys
    from common.effects import HGetAll

    record = cloud.store.execute(HGetAll(keys.instance(running["InstanceId"])))
    assert base64.b64decode(record["user_data"]) == b"#!/bin/sh\necho hello\n"
    everything = ec2.describe_instances()["Reservations"]
    assert running["InstanceId"] in [i["InstanceId"] for r in everything for i in r["Instances"]]
    console = ec2.get_console_output(InstanceId=running["InstanceId"])
    assert console["InstanceId"] == running["InstanceId"]
    assert running["InstanceId"] in console["Output"]
    ec2.reboot_instances(InstanceIds=[running["InstanceId"]])
    wait_for_state(ec2, running["InstanceId"], {"running"})


def test_addresses_allocate_associate_disassociate_release(cloud, running):
    from botocore.exceptions import ClientError

    ec2 = cloud.client("ops")
    free = cloud.snapshot()["floating_free"]
    address = ec2.allocate_address()["PublicIp"]
    assert address in [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]]
    assert cloud.snapshot()["floating_free"] == free - 1
    before = cloud.snapshot()
    with pytest.raises(ClientError) as caught:
        ec2.associate_address(PublicIp=address, InstanceId="i-nothere")
    assert code_of(caught.value) == ("InvalidInstanceID.NotFound", 400)
    assert cloud.snapshot() == before
    ec2.associate_address(PublicIp=address, InstanceId=running["InstanceId"])
    (held,) = ec2.describe_addresses(PublicIps=[address])["Addresses"]
    assert held["InstanceId"] == running["InstanceId"]
    assert wait_for_state(ec2, running["InstanceId"], {"running"})["PublicIpAddress"] == address
    bound = sh("ip", "-n", cloud.netns, "-4", "addr", "show", "dev", "eth0").stdout
    assert f"{address}/32" in bound
    ec2.disassociate_address(PublicIp=address)
    assert ec2.describe_addresses(PublicIps=[address])["Addresses"][0].get("InstanceId", "") == ""
    ec2.release_address(PublicIp=address)
    assert address not in [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]]
    assert cloud.snapshot()["floating_free"] == free


def test_address_quota_is_address_limit_exceeded(cloud):
    from botocore.exceptions import ClientError

    ec2 = cloud.client("ops")
    held = [ec2.allocate_address()["PublicIp"] for _ in range(QUOTA["floating_ips"])]
    try:
        before = cloud.snapshot()
        with pytest.raises(ClientError) as caught:
            ec2.allocate_address()
        assert code_of(caught.value) == ("AddressLimitExceeded", 400)
        assert cloud.snapshot() == before
    finally:
        for address in held:
            ec2.release_address(PublicIp=address)


def test_terminate_instances(cloud):
    ec2 = cloud.client("ops")
    reservation = ec2.run_instances(ImageId="ami-tiny", InstanceType="m1.tiny", MinCount=1, MaxCount=2)
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    assert len(ids) == 2 and reservation["OwnerId"] == PROJECT
    for instance_id in ids:
        wait_for_state(ec2, instance_id, {"running"})
    gone = ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
    assert sorted(i["InstanceId"] for i in gone) == sorted(ids)
    assert {i["PreviousState"]["Name"] for i in gone} == {"running"}
    assert {i["CurrentState"]["Name"] for i in gone} <= {"shutting-down", "terminated"}
    for instance_id in ids:
        wait_for_state(ec2, instance_id, {"terminated"})
    assert not set(ids) & {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def _reservation_of(body):
    root = ET.fromstring(body)
    return root.findtext(f"{EC2_NS}reservationId"), [
        item.findtext(f"{EC2_NS}instanceId") for item in root.findall(f"{EC2_NS}instancesSet/{EC2_NS}item")]


def test_a_client_token_retry_a_second_later_launches_once(cloud):
    """RunInstances signed twice with one ClientToken, a second apart (the client's
    retry after a timeout): one reservation, one instance."""
    params = {"Action": "RunInstances", "ImageId": "ami-tiny", "InstanceType": "m1.tiny", "MinCount": "1",
              "MaxCount": "1", "ClientToken": f"retry-{secrets.token_hex(4)}"}
    status, first = _v2_post(cloud, params)
    assert status == 200, first
    time.sleep(1)  # the second request has its own timestamp and signature, as a retry would
    status, again = _v2_post(cloud, params)
    assert status == 200, again
    assert _reservation_of(again) == _reservation_of(first)
    reservation_id, (instance_id,) = _reservation_of(first)
    ec2 = cloud.client("ops")
    launched = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] if r["ReservationId"] == reservation_id
                for i in r["Instances"]]
    assert launched == [instance_id]
    status, other = _v2_post(cloud, {**params, "InstanceType": "m1.small"})
    assert status == 400 and b"<Code>IdempotentParameterMismatch</Code>" in other
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for_state(ec2, instance_id, {"terminated"})


# ---------------------------------------------------------------------------
# boto 2.49, unmodified


def _boto2(cloud, service_name="ec2"):
    """A boto 2 EC2 connection to the API as ops. boto 2.49 signs EC2 with version 4
    and takes the service name from the host name unless ``auth_service_name`` is set."""
    try:
        from boto.ec2.connection import EC2Connection
        from boto.ec2.regioninfo import RegionInfo
    except ImportError as e:
        service_unavailable("boto 2", f"pip install boto ({e})")
    parts = urlsplit(cloud.server.url)
    access, secret = cloud.users["ops"]
    connection = EC2Connection(f"{access}:{PROJECT}", secret, is_secure=False, port=parts.port, path=parts.path,
                               region=RegionInfo(name="nova", endpoint=parts.hostname))
    if service_name:
        connection.auth_service_name = service_name
    return connection


def _boto2_wait(instance, wanted, timeout=BOOT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while instance.update() not in wanted:
        assert instance.state != "error" and time.monotonic() < deadline, (instance.id, instance.state)
        time.sleep(0.2)


def test_boto2_runs_describes_reads_the_console_and_terminates(cloud):
    """boto 2's own calls: run_instances, get_all_reservations, get_console_output, terminate."""
    ec2 = _boto2(cloud)
    (instance,) = ec2.run_instances("ami-tiny", instance_type="m1.tiny").instances
    _boto2_wait(instance, {"running"})
    found = [i.id for r in ec2.get_all_reservations(instance_ids=[instance.id]) for i in r.instances]
    assert found == [instance.id]
    console = ec2.get_console_output(instance.id)  # sends InstanceId.1
    assert console.instance_id == instance.id and instance.id in console.output.decode(errors="replace")
    assert [i.id for i in ec2.terminate_instances([instance.id])] == [instance.id]
    _boto2_wait(instance, {"terminated"})


def test_boto2_needs_the_service_name_against_an_address(cloud):
    """Without ``auth_service_name`` boto 2 signs for service "127" (from 127.0.0.1): refused."""
    from boto.exception import EC2ResponseError

    with pytest.raises(EC2ResponseError) as caught:
        _boto2(cloud, service_name=None).get_all_zones()
    assert caught.value.error_code == "AuthFailure" and "'127'" in str(caught.value.body)
    assert [zone.name for zone in _boto2(cloud).get_all_zones()] == ["nova"]


def test_curl_signs_version_4_for_the_users_own_project(cloud):
    """curl --aws-sigv4 works with a bare access key (the user's own project): its --user
    splits at the first colon, so ``<access>:<project>`` cannot be given."""
    if shutil.which("curl") is None:
        service_unavailable("curl", "not installed")
    access, secret = cloud.users["dev"]
    done = subprocess.run(
        ["curl", "-sS", "--aws-sigv4", "aws:amz:nova:ec2", "--user", f"{access}:{secret}",
         "--data", "Action=DescribeAvailabilityZones&Version=2010-08-31", cloud.server.url],
        capture_output=True, text=True, timeout=30)
    assert "<zoneName>nova</zoneName>" in done.stdout, done.stdout + done.stderr


# ---------------------------------------------------------------------------
# The HTTP side


def _v2_post(cloud, params, user="ops", chunked=False):
    access, secret = cloud.users[user]
    parts = urlsplit(cloud.server.url)
    params = {**params, "AWSAccessKeyId": f"{access}:{PROJECT}", "SignatureVersion": "2",
              "SignatureMethod": "HmacSHA256", "Version": "2010-08-31",
              "Timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    canonical = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    to_sign = f"POST\n{parts.netloc}\n{parts.path}\n{canonical}"
    params["Signature"] = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).digest()).decode()
    body = urlencode(params).encode()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, body=iter([body[:10], body[10:]]) if chunked else body,
                           encode_chunked=chunked, headers={"Content-Type": "application/x-www-form-urlencoded"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_signature_version_2_over_http(cloud):
    status, body = _v2_post(cloud, {"Action": "DescribeAvailabilityZones"})
    assert status == 200, body
    assert b'xmlns="http://ec2.amazonaws.com/doc/2010-08-31/"' in body and b"<zoneName>nova</zoneName>" in body
    status, body = _v2_post(cloud, {"Action": "DescribeAvailabilityZones"}, chunked=True)
    assert status == 200, body


def test_the_server_never_trusts_a_request_that_claims_it(cloud):
    """A Trusted-Access-Key header or trusted_access_key parameter is unsigned: 401."""
    access, _ = cloud.users["ops"]
    parts = urlsplit(cloud.server.url)
    body = urlencode({"Action": "DescribeAvailabilityZones", "Version": "2010-08-31",
                      "trusted_access_key": f"{access}:{PROJECT}"}).encode()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Trusted-Access-Key": f"{access}:{PROJECT}",
            "Trusted_Access_Key": f"{access}:{PROJECT}"})
        answer = connection.getresponse()
        assert answer.status == 401
        assert b"<Code>AuthFailure</Code>" in answer.read()
    finally:
        connection.close()


def test_a_chunked_body_over_the_bound_is_413(cloud):
    parts = urlsplit(cloud.server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    chunks = (b"Action=DescribeInstances&x=", *([b"a" * 1024] * 300))
    connection.request("POST", parts.path, body=iter(chunks), encode_chunked=True,
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"})
    answer = connection.getresponse()
    assert answer.status == 413
    assert b"<Code>RequestEntityTooLarge</Code>" in answer.read()
    connection.close()


def test_other_paths_404_big_bodies_413_and_an_access_line_each(cloud):
    parts = urlsplit(cloud.server.url)
    for path, data, status in (("/", None, 404), ("/services/Admin", None, 404),
                               (parts.path, b"Action=DescribeInstances&x=" + b"a" * (300 * 1024), 413)):
        request = urllib.request.Request(f"{parts.scheme}://{parts.netloc}{path}", data=data,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == status
        assert b"<Response><Errors><Error><Code>" in caught.value.read()
    cloud.client("dev").describe_availability_zones()
    lines = cloud.access_log
    assert any('"GET / HTTP/1.1" 404 ' in line and " - InvalidURI " in line for line in lines), lines[-5:]
    assert any(" 413 " in line and " RequestEntityTooLarge " in line for line in lines), lines[-5:]
    assert " - dev [" in lines[-1] and '"POST /services/Cloud HTTP/1.1" 200 ' in lines[-1], lines[-1]
    assert " DescribeAvailabilityZones - " in lines[-1]


def test_the_reaper_runs_as_the_apis_periodic_task(cloud):
    deadline = time.monotonic() + 10
    while cloud.server.reaper.passes < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cloud.server.reaper.passes >= 2


def test_serve_config_refuses_to_start_without_redis(capsys):
    """``novalab api`` (real.api.serve_config) with an unreachable Redis exits 2 naming it."""
    from types import SimpleNamespace

    from real.api import serve_config
    from real.config import DaemonConfig

    # The api_* settings are proposed for DaemonConfig; until they land, add them here.
    api_settings = dict(api_listen="127.0.0.1", api_port=0, api_threads=2, api_dispatch="queue",
                        quota_instances=10, quota_cores=20, quota_floating_ips=10)
    settings = DaemonConfig(redis_url="redis://127.0.0.1:1/0", connect_timeout=1.0).model_dump()
    config = SimpleNamespace(**{**api_settings, **settings})
    assert serve_config(config) == 2
    assert "Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err
