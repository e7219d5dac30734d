"""Issue 14's acceptance: clients nobody here wrote, unmodified, against ``novalab deploy
up`` (one deployment for the module, credentials from its directory): the AWS CLI,
boto3's transfer manager, curl with a pre-signed URL, boto 2.49 and python-swiftclient.
The same behaviours against a bare object store, with their refusals, are in
test_s3_clients.py and test_swift.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from conftest import cloud_users, service_unavailable

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def alice(cloud) -> dict:
    """alice in project demo: her keys and the deployment's endpoints."""
    access, secret = cloud_users(cloud)["alice"]
    return {"access": f"{access}:demo", "secret": secret, "s3": cloud.s3_url(cloud.config),
            "ec2": cloud.ec2_url(cloud.config)}


def s3_client(alice):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=alice["s3"], region_name="nova", aws_access_key_id=alice["access"],
                        aws_secret_access_key=alice["secret"], config=Config(retries={"total_max_attempts": 1}))


def ec2_client(alice):
    import boto3

    return boto3.client("ec2", endpoint_url=alice["ec2"], region_name="nova", aws_access_key_id=alice["access"],
                        aws_secret_access_key=alice["secret"])


def random_file(path, size):
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def needs(command: str):
    if shutil.which(command) is None:
        service_unavailable(f"the {command} command", "not on PATH (pip install -e '.[test]')")


def run(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ST_", "OS_"))}
    env.update(env_extra)
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_aws_cli_moves_100_mib_up_and_down_with_default_settings(alice, tmp_path):
    """`aws s3 cp` up and down (multipart both ways: 13 parts of 8 MiB) gives the same SHA-256."""
    needs("aws")
    s3_client(alice).create_bucket(Bucket="cli")
    source = random_file(tmp_path / "big", 100 * MIB)
    env = {"AWS_ACCESS_KEY_ID": alice["access"], "AWS_SECRET_ACCESS_KEY": alice["secret"],
           "AWS_DEFAULT_REGION": "nova", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    run(["aws", "--endpoint-url", alice["s3"], "s3", "cp", str(source), "s3://cli/big"], env, tmp_path)
    run(["aws", "--endpoint-url", alice["s3"], "s3", "cp", "s3://cli/big", str(tmp_path / "back")], env, tmp_path)
    assert sha256_of(tmp_path / "back") == sha256_of(source)
    assert s3_client(alice).head_object(Bucket="cli", Key="big")["ETag"].endswith('-13"')


def test_boto3_transfer_manager_and_a_ranged_get(alice, tmp_path):
    """upload_file/download_file with default settings keep every byte; a ranged GET is 206 with just those bytes."""
    s3 = s3_client(alice)
    s3.create_bucket(Bucket="transfer")
    source = random_file(tmp_path / "mid", 20 * MIB + 321)
    s3.upload_file(str(source), "transfer", "mid")
    s3.download_file("transfer", "mid", str(tmp_path / "back"))
    assert sha256_of(tmp_path / "back") == sha256_of(source)
    part = s3.get_object(Bucket="transfer", Key="mid", Range=f"bytes={8 * MIB - 2}-{8 * MIB + 1}")
    with open(source, "rb") as f:
        f.seek(8 * MIB - 2)
        assert (part["ResponseMetadata"]["HTTPStatusCode"], part["Body"].read()) == (206, f.read(4))


def test_a_presigned_url_works_with_curl(alice, tmp_path):
    """curl fetches an object with a pre-signed GET URL, no keys of its own."""
    needs("curl")
    s3 = s3_client(alice)
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="for curl.txt", Body=b"signed for curl")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "shared", "Key": "for curl.txt"}, ExpiresIn=300)
    done = subprocess.run(["curl", "-sf", url], capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, b"signed for curl")


def test_boto2_basic_s3_and_ec2_calls(alice):
    """boto 2.49 as it is: a bucket, a key written and read; availability zones and images."""
    try:
        from boto.ec2.connection import EC2Connection
        from boto.ec2.regioninfo import RegionInfo
        from boto.s3.connection import OrdinaryCallingFormat, S3Connection
    except ImportError as e:
        service_unavailable("boto 2", f"pip install boto ({e})")
    s3_at = urlsplit(alice["s3"])
    s3 = S3Connection(alice["access"], alice["secret"], host=s3_at.hostname, port=s3_at.port, is_secure=False,
                      calling_format=OrdinaryCallingFormat())
    bucket = s3.create_bucket("boto2-files")
    bucket.new_key("hello.txt").set_contents_from_string("from boto 2")
    assert bucket.get_key("hello.txt").get_contents_as_string() == b"from boto 2"
    assert "boto2-files" in [b.name for b in s3.get_all_buckets()]
    ec2_at = urlsplit(alice["ec2"])
    ec2 = EC2Connection(alice["access"], alice["secret"], is_secure=False, port=ec2_at.port, path=ec2_at.path,
                        region=RegionInfo(name="nova", endpoint=ec2_at.hostname))
    ec2.auth_service_name = "ec2"  # boto 2 would take "127" from the address
    assert "nova" in [zone.name for zone in ec2.get_all_zones()]
    assert "ami-tiny" in [image.id for image in ec2.get_all_images()]


def test_a_client_token_retry_of_run_instances_launches_once(alice):
    """RunInstances sent again a second later with the same ClientToken returns the first reservation; one instance runs."""
    ec2 = ec2_client(alice)
    token = f"retry-{os.urandom(4).hex()}"
    first = ec2.run_instances(ImageId="ami-tiny", InstanceType="m1.tiny", MinCount=1, MaxCount=1, ClientToken=token)
    time.sleep(1)
    again = ec2.run_instances(ImageId="ami-tiny", InstanceType="m1.tiny", MinCount=1, MaxCount=1, ClientToken=token)
    assert again["ReservationId"] == first["ReservationId"]
    launched = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                if r["ReservationId"] == first["ReservationId"] for i in r["Instances"]]
    assert launched == [first["Instances"][0]["InstanceId"]]
    ec2.get_waiter("instance_running").wait(InstanceIds=launched, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ec2.terminate_instances(InstanceIds=launched)


def test_swift_and_s3_see_the_same_objects(cloud, alice, tmp_path):
    """swift (ST_* as `manage credentials` writes them) uploads a segmented file that S3 downloads; S3's upload swift downloads."""
    needs("swift")
    env = {"ST_AUTH": f"{alice['s3']}/auth/v1.0", "ST_USER": "demo:alice", "ST_KEY": alice["secret"]}
    source = random_file(tmp_path / "big", 5 * MIB + 99)
    run(["swift", "upload", "--segment-size", str(2 * MIB), "media", "big"], env, tmp_path)
    s3 = s3_client(alice)
    body = s3.get_object(Bucket="media", Key="big")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256_of(source)
    s3.upload_file(str(source), "media", "from-s3")
    assert run(["swift", "list", "media"], env, tmp_path).split() == ["big", "from-s3"]
    run(["swift", "download", "media", "from-s3", "-o", "back"], env, tmp_path)
    assert sha256_of(tmp_path / "back") == sha256_of(source)
    run(["swift", "delete", "media", "big"], env, tmp_path)
    assert run(["swift", "list", "media_segments"], env, tmp_path) == ""
