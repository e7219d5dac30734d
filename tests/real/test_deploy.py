"""``novalab deploy``: refusals, and one small deployment taken through status, the
object store's projects (credentials from the directory) and down."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import cloud_users, deploy_env, free_ports

from real import deploy_roster, processes, vhosts
from real.deploy import Deployment


def _up(tmp_path, capsys, environ, **options):
    api, s3 = free_ports()
    status = Deployment(tmp_path / "cloud").up(api_port=api, s3_port=s3, environ=environ, **options)
    return status, capsys.readouterr()


# ---------------------------------------------------------------------------
# Refusals: exit 2, the reason and the set-up script named, nothing left running


def test_up_refuses_when_redis_is_unreachable(tmp_path, capsys, amqp_url):
    status, out = _up(tmp_path, capsys, deploy_env(NOVALAB_REDIS_URL="redis://127.0.0.1:1/0", NOVALAB_AMQP_URL=amqp_url))
    assert status == 2
    assert "Redis at redis://127.0.0.1:1/0" in out.err and "bash real/setup/services.sh" in out.err
    assert sorted(p.name for p in (tmp_path / "cloud").iterdir()) == []


def test_up_refuses_when_rabbitmq_is_unreachable(tmp_path, capsys, redis_url):
    status, out = _up(tmp_path, capsys, deploy_env(NOVALAB_REDIS_URL=redis_url,
                                             NOVALAB_AMQP_URL="amqp://guest:guest@127.0.0.1:1//"))
    assert status == 2
    assert "RabbitMQ at amqp://guest:guest@127.0.0.1:1//" in out.err and "real/setup/services.sh" in out.err


def test_up_refuses_without_slapd(tmp_path, capsys, monkeypatch):
    from real import slapd

    def missing(name):
        raise slapd.SlapdMissing(f"{name} is not installed (run real/setup/slapd.sh: Debian packages slapd, ldap-utils)")

    monkeypatch.setattr(slapd, "_find", missing)
    status, out = _up(tmp_path, capsys, deploy_env())
    assert status == 2 and "real/setup/slapd.sh" in out.err


def test_up_refuses_without_libvirt_python(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt raises ImportError
    status, out = _up(tmp_path, capsys, deploy_env())
    assert status == 2 and "libvirt-python is missing" in out.err and "real/setup/libvirt.sh" in out.err


def test_up_refuses_a_port_in_use(tmp_path, capsys, redis_url, amqp_url):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status = Deployment(tmp_path / "cloud").up(api_port=port, environ=deploy_env(NOVALAB_REDIS_URL=redis_url,
                                                                                NOVALAB_AMQP_URL=amqp_url))
    err = capsys.readouterr().err
    assert status == 2 and f"port {port} on 127.0.0.1 for the EC2 API is in use" in err and "--api-port" in err


def test_status_and_down_of_an_empty_directory(tmp_path, capsys):
    assert Deployment(tmp_path).status() == 1
    assert Deployment(tmp_path).down() == 0
    assert "nothing deployed" in capsys.readouterr().out


def test_the_cli_takes_deploy(tmp_path):
    done = subprocess.run([sys.executable, "-m", "real.cli", "deploy", "status", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=deploy_env())
    assert done.returncode == 1 and "nothing deployed" in done.stdout


# ---------------------------------------------------------------------------
# One deployment


def test_status_lists_every_process_with_its_heartbeat(cloud, capsys):
    assert cloud.status() == 0
    out = capsys.readouterr().out
    for name in ("slapd", "network-net1", "compute-host1", "scheduler-sched1", "api", "objectstore"):
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert " running" in line, line
        if name in ("network-net1", "compute-host1", "scheduler-sched1"):
            assert " s ago" in line, line
    assert cloud.config.bind_floating is False and cloud.config.network_manager == "flat"
    # the scheduler places by the hosts' vCPUs and memory (--vcpus, --memory-mb) as the sim does
    scheduler = cloud.config.settings().scheduler_config()
    assert (scheduler.max_cores, scheduler.max_memory_mb) == (16, 32768)
    assert oct(cloud.config_path.stat().st_mode & 0o777) == "0o600"  # it holds the directory's password


def test_object_store_buckets_belong_to_projects(cloud):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from real.ec2_client import Ec2Client

    users = cloud_users(cloud)
    url = cloud.s3_url(cloud.config)

    def s3(user, project):
        access, secret = users[user]
        return boto3.client("s3", endpoint_url=url, region_name="nova", aws_access_key_id=f"{access}:{project}",
                            aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))

    def code(call):
        with pytest.raises(ClientError) as caught:
            call()
        return caught.value.response["Error"]["Code"]

    alice = s3("alice", "demo")
    alice.create_bucket(Bucket="demo-data")
    alice.put_object(Bucket="demo-data", Key="k", Body=b"v")
    bob = s3("bob", "other")
    assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == []
    assert code(lambda: bob.get_object(Bucket="demo-data", Key="k")) == "AccessDenied"
    assert code(lambda: s3("bob", "demo").list_buckets()) == "AccessDenied"  # not a member of demo
    assert code(lambda: s3("alice", "nosuch").list_buckets()) == "AccessDenied"
    wrong = boto3.client("s3", endpoint_url=url, region_name="nova", aws_access_key_id=f"{users['alice'][0]}:demo",
                         aws_secret_access_key="not-the-secret", config=Config(retries={"total_max_attempts": 1}))
    assert code(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch"
    nobody = boto3.client("s3", endpoint_url=url, region_name="nova", aws_access_key_id="NOBODY:demo",
                          aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))
    assert code(lambda: nobody.list_buckets()) == "InvalidAccessKeyId"
    root = s3("root", "other")  # an admin acts for any project and sees every bucket
    assert root.get_object(Bucket="demo-data", Key="k")["Body"].read() == b"v"
    assert "demo-data" in [b["Name"] for b in root.list_buckets()["Buckets"]]
    # The EC2 API of the deployment takes the same keys.
    access, secret = users["alice"]
    zones = Ec2Client(cloud.ec2_url(cloud.config), f"{access}:demo", secret).call("DescribeAvailabilityZones")
    assert "nova" in [e.text for e in zones.iter() if e.tag.endswith("zoneName")]


def test_a_nested_body_on_every_topic_leaves_every_worker_serving(cloud):
    """Reliability A14: 200 KB of brackets on every topic, twice per worker; every consumer stays and a launch runs."""
    from common import rpc
    from real import transport
    from real.ec2_client import Ec2Client

    queues = deploy_roster.queue_names(cloud.state())
    before = transport.queue_stats(cloud.config.amqp_url, queues)
    for queue in queues:
        for _ in range(2 * before[queue]["consumers"]):
            transport.publish_raw(cloud.config.amqp_url, queue, rpc.poison_body("nested", queue.split(".")[0]))
    access, secret = cloud_users(cloud)["alice"]
    ec2 = Ec2Client(cloud.ec2_url(cloud.config), f"{access}:demo", secret)
    (instance,) = ec2.run_instances("ami-tiny", "m1.tiny")
    deadline = time.monotonic() + 60
    while ec2.describe_instances([instance]).get(instance) != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ec2.describe_instances([instance])[instance] == "running"
    after = transport.queue_stats(cloud.config.amqp_url, queues)
    while any(stats["messages"] for stats in after.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = transport.queue_stats(cloud.config.amqp_url, queues)
    assert after == {queue: {"messages": 0, "consumers": stats["consumers"]} for queue, stats in before.items()}
    ec2.terminate_instances([instance])


def test_down_stops_everything_and_cleans_up(cloud, capsys, redis_url):
    import redis

    from real import transport

    capsys.readouterr()
    state = cloud.state()
    pids = {name: cloud.pid(name) for name in state["processes"]}
    os.kill(pids["compute-host1"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cloud.running("compute-host1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cloud.status() == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "compute-host1" in line)
    assert " stopped " in line
    prefix = cloud.config.key_prefix
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match=f"{prefix}*", count=500))
    assert cloud.down() == 0
    assert not any(processes.pid_alive(pid, cloud.marker(name)) for name, pid in pids.items())
    assert list(client.scan_iter(match=f"{prefix}*", count=500)) == []
    if state["vhost"]:
        listed = subprocess.run([vhosts.rabbitmqctl(), "-q", "list_vhosts"], capture_output=True, text=True,
                                timeout=60).stdout.split()
        assert state["vhost"] not in listed
    else:
        depths = transport.queue_depths(cloud.config.amqp_url, deploy_roster.queue_names(state))
        assert set(depths.values()) == {None}
    assert sorted(p.name for p in cloud.dir.iterdir()) == ["logs"]
    assert "down in" in capsys.readouterr().out
