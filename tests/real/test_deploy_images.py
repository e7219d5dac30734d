"""Images end to end against ``novalab deploy up``: an object uploaded with boto3,
registered with the unmodified AWS CLI, booted, its compute host's libvirt domain
booting from the cached copy (checksum and all), and deregistered."""

import hashlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import cloud_users

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from real.deploy_images import default_image  # noqa: E402

#: Seconds a launch may take to run (the test driver boots at once; the fetch is local).
RUN_TIMEOUT = 60.0
DISK = os.urandom(300_000) + b"an image of alice's"

needs_cli = pytest.mark.skipif(shutil.which("aws") is None and not os.environ.get("CI"),
                               reason="the AWS CLI is not installed (pip install awscli)")


def keys(cloud, user="alice", project="demo"):
    access, secret = cloud_users(cloud)[user]
    return f"{access}:{project}", secret


def client(cloud, service, user="alice", project="demo"):
    access, secret = keys(cloud, user, project)
    url = cloud.ec2_url(cloud.config) if service == "ec2" else cloud.s3_url(cloud.config)
    return boto3.client(service, endpoint_url=url, region_name="nova", aws_access_key_id=access,
                        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))


def aws_ec2(cloud, *args, user="alice", project="demo"):
    """The AWS CLI as it is, with the user's keys; -> its JSON answer."""
    access, secret = keys(cloud, user, project)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "nova",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    done = subprocess.run(["aws", "ec2", *args, "--endpoint-url", cloud.ec2_url(cloud.config), "--output", "json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def upload(cloud, bucket, key, body):
    s3 = client(cloud, "s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def run_until_running(ec2, image_id) -> str:
    """Launch one m1.tiny of ``image_id`` and poll (bounded) until it runs; -> its id."""
    reservation = ec2.run_instances(ImageId=image_id, InstanceType="m1.tiny", MinCount=1, MaxCount=1)
    instance_id = reservation["Instances"][0]["InstanceId"]
    deadline = time.monotonic() + RUN_TIMEOUT
    state = None
    while time.monotonic() < deadline:
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        state = instance["State"]["Name"]
        if state in ("running", "error", "terminated"):
            break
        time.sleep(0.2)
    assert state == "running", f"{instance_id} is {state}: {instance.get('StateReason')}"
    return instance_id


def root_disk(cloud, instance_id) -> str:
    """The file the domain's first disk (vda) boots from, as the compute host defined it."""
    domain = ET.parse(cloud.dir / "instances" / instance_id / "libvirt.xml").getroot()
    for disk in domain.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None and target.get("dev") == "vda":
            return source.get("file", "")
    raise AssertionError(f"the domain of {instance_id} has no vda")


def md5_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def test_the_default_image_is_registered_public_and_boots_from_the_cache(cloud):
    """deploy up uploaded and registered ami-tiny; a launch boots from the cached copy of its object."""
    ec2 = client(cloud, "ec2")
    (image,) = ec2.describe_images(ImageIds=["ami-tiny"])["Images"]
    assert (image["Public"], image["OwnerId"], image["ImageLocation"]) == (True, "novalab",
                                                                           "novalab-images/ami-tiny.img")
    disk = root_disk(cloud, run_until_running(ec2, "ami-tiny"))
    assert disk == str(cloud.dir / "instances" / "_base" / "ami-tiny")
    assert md5_of(disk) == hashlib.md5(default_image()).hexdigest()


@needs_cli
def test_an_image_registered_with_the_aws_cli_boots_from_the_cached_object(cloud):
    """Upload with boto3, register-image with the AWS CLI, launch: the domain's disk is the object, byte for byte."""
    upload(cloud, "demo-images", "disk.img", DISK)
    image_id = aws_ec2(cloud, "register-image", "--image-location", "demo-images/disk.img", "--name", "alice disk")[
        "ImageId"]
    ec2 = client(cloud, "ec2")
    (image,) = ec2.describe_images(Owners=["self"])["Images"]
    assert (image["ImageId"], image["Name"], image["Public"]) == (image_id, "alice disk", False)
    disk = root_disk(cloud, run_until_running(ec2, image_id))
    assert disk == str(cloud.dir / "instances" / "_base" / image_id)
    assert md5_of(disk) == hashlib.md5(DISK).hexdigest()


@needs_cli
def test_a_deregistered_image_refuses_new_launches(cloud):
    """deregister-image (the CLI) removes the image: RunInstances answers InvalidAMIID.NotFound."""
    upload(cloud, "demo-images", "short-lived.img", b"x" * 4096)
    image_id = aws_ec2(cloud, "register-image", "--image-location", "demo-images/short-lived.img", "--name",
                       "short lived")["ImageId"]
    aws_ec2(cloud, "deregister-image", "--image-id", image_id)
    with pytest.raises(ClientError) as refused:
        client(cloud, "ec2").run_instances(ImageId=image_id, InstanceType="m1.tiny", MinCount=1, MaxCount=1)
    assert refused.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"


def test_another_project_neither_sees_nor_registers_alices_images(cloud):
    """bob (project other) cannot describe alice's private image nor register from her bucket, and learns nothing."""
    upload(cloud, "demo-images", "private.img", b"y" * 4096)
    alice_image = client(cloud, "ec2").register_image(ImageLocation="demo-images/private.img", Name="private")
    bob = client(cloud, "ec2", "bob", "other")
    codes = []
    for call in (lambda: bob.describe_images(ImageIds=[alice_image["ImageId"]]),
                 lambda: bob.register_image(ImageLocation="demo-images/private.img", Name="stolen"),
                 lambda: bob.register_image(ImageLocation="demo-images/no-such.img", Name="nothing")):
        with pytest.raises(ClientError) as refused:
            call()
        codes.append((refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]))
    assert [code for code, _ in codes] == ["InvalidAMIID.NotFound", "InvalidManifest", "InvalidManifest"]
    assert codes[1][1].replace("private.img", "no-such.img") == codes[2][1]  # the same words for both
