"""real/objectstore served on a free local port, driven by boto3's S3 client as it is."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time

import pytest

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from real.objectstore import ObjectStoreServer  # noqa: E402
from real.objectstore.auth import file_lookup, sign_headers  # noqa: E402

KEYS = {
    "alice": ("alice-secret", "p1", False),
    "bob": ("bob-secret", "p2", False),
    "root": ("root-secret", "admin", True),
}


@pytest.fixture
def store(tmp_path):
    with ObjectStoreServer(tmp_path / "root", KEYS.get, port=0) as server:
        yield server


def client(store, access="alice:p1", secret="alice-secret"):
    return boto3.client(
        "s3", endpoint_url=store.url, region_name="us-east-1", aws_access_key_id=access, aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture
def s3(store):
    s3 = client(store)
    s3.create_bucket(Bucket="images")
    return s3


def test_put_get_head_delete_object(s3):
    """An object reads back byte for byte, HEAD gives its length and time, DELETE removes it."""
    s3.put_object(Bucket="images", Key="ubuntu/disk.img", Body=b"x" * 1000)
    assert s3.get_object(Bucket="images", Key="ubuntu/disk.img")["Body"].read() == b"x" * 1000
    head = s3.head_object(Bucket="images", Key="ubuntu/disk.img")
    assert head["ContentLength"] == 1000 and head["LastModified"].year >= 2024
    s3.delete_object(Bucket="images", Key="ubuntu/disk.img")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="images", Key="ubuntu/disk.img")
    assert code(e) == "NoSuchKey"


def test_etag_is_the_md5_of_the_body(s3):
    """PUT, GET, HEAD and the listing all give the quoted MD5 hex as ETag."""
    body = os.urandom(70_000)
    md5 = f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.put_object(Bucket="images", Key="k", Body=body)["ETag"] == md5
    assert s3.get_object(Bucket="images", Key="k")["ETag"] == md5
    assert s3.head_object(Bucket="images", Key="k")["ETag"] == md5
    assert s3.list_objects(Bucket="images")["Contents"][0]["ETag"] == md5


def test_overwrite_replaces_the_object(s3):
    """A second PUT of a key replaces body, length and ETag together."""
    s3.put_object(Bucket="images", Key="k", Body=b"first version")
    s3.put_object(Bucket="images", Key="k", Body=b"2nd")
    got = s3.get_object(Bucket="images", Key="k")
    assert got["Body"].read() == b"2nd" and got["ETag"] == f'"{hashlib.md5(b"2nd").hexdigest()}"'


def test_list_with_prefix(s3):
    """Only keys under the prefix are listed, in key order."""
    for key in ("a/2", "b/1", "a/1", "a b+c/1"):
        s3.put_object(Bucket="images", Key=key, Body=b"")
    assert [o["Key"] for o in s3.list_objects(Bucket="images", Prefix="a/")["Contents"]] == ["a/1", "a/2"]
    assert [o["Key"] for o in s3.list_objects(Bucket="images", Prefix="a ")["Contents"]] == ["a b+c/1"]


def test_list_with_marker_and_max_keys_truncates(s3):
    """max-keys cuts the page, IsTruncated says so, NextMarker continues after it."""
    for i in range(5):
        s3.put_object(Bucket="images", Key=f"k{i}", Body=b"")
    page = s3.list_objects(Bucket="images", MaxKeys=2)
    assert [o["Key"] for o in page["Contents"]] == ["k0", "k1"]
    assert page["IsTruncated"] and page["NextMarker"] == "k1"
    rest = s3.list_objects(Bucket="images", Marker=page["NextMarker"], MaxKeys=10)
    assert [o["Key"] for o in rest["Contents"]] == ["k2", "k3", "k4"] and not rest["IsTruncated"]


def test_list_v2_paginates_with_continuation_tokens(s3):
    """ListObjectsV2 through boto3's paginator sees every key once."""
    for i in range(7):
        s3.put_object(Bucket="images", Key=f"k{i}", Body=b"")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="images", PaginationConfig={"PageSize": 3})
    assert [o["Key"] for p in pages for o in p["Contents"]] == [f"k{i}" for i in range(7)]


def test_list_with_delimiter_groups_common_prefixes(s3):
    """A delimiter folds deeper keys into CommonPrefixes."""
    for key in ("top", "dir/a", "dir/b", "other/c"):
        s3.put_object(Bucket="images", Key=key, Body=b"")
    page = s3.list_objects(Bucket="images", Delimiter="/")
    assert [o["Key"] for o in page["Contents"]] == ["top"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir/", "other/"]


def test_list_buckets_shows_only_the_callers_project(store, s3):
    """ListBuckets shows a project its own buckets, and an admin all of them."""
    client(store, "bob:p2", "bob-secret").create_bucket(Bucket="bobs")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["images"]
    assert [b["Name"] for b in client(store, "root", "root-secret").list_buckets()["Buckets"]] == ["bobs", "images"]


def test_create_existing_bucket_is_refused(store, s3):
    """Re-creating your own bucket is BucketAlreadyOwnedByYou; someone else's, BucketAlreadyExists."""
    with pytest.raises(ClientError) as mine:
        s3.create_bucket(Bucket="images")
    with pytest.raises(ClientError) as theirs:
        client(store, "bob:p2", "bob-secret").create_bucket(Bucket="images")
    assert (code(mine), code(theirs)) == ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def test_delete_non_empty_bucket_is_refused(s3):
    """A bucket with an object in it cannot be deleted; once empty it can."""
    s3.put_object(Bucket="images", Key="k", Body=b"1")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="images")
    assert code(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="images", Key="k")
    s3.delete_bucket(Bucket="images")
    assert s3.list_buckets()["Buckets"] == []


def test_missing_bucket_is_no_such_bucket(s3):
    """Operations on a bucket that does not exist answer NoSuchBucket."""
    with pytest.raises(ClientError) as e:
        s3.list_objects(Bucket="nothere")
    assert code(e) == "NoSuchBucket"


def test_another_projects_bucket_is_access_denied(store, s3):
    """Another project can neither read, write, list nor delete the bucket; an admin can."""
    s3.put_object(Bucket="images", Key="k", Body=b"secret")
    bob = client(store, "bob:p2", "bob-secret")
    for call in (lambda: bob.get_object(Bucket="images", Key="k"), lambda: bob.list_objects(Bucket="images"),
                 lambda: bob.put_object(Bucket="images", Key="x", Body=b""), lambda: bob.delete_bucket(Bucket="images")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert client(store, "root", "root-secret").get_object(Bucket="images", Key="k")["Body"].read() == b"secret"


def test_acting_for_another_project_is_access_denied(store):
    """A non-admin key cannot claim a project other than its own."""
    with pytest.raises(ClientError) as e:
        client(store, "alice:p2").list_buckets()
    assert code(e) == "AccessDenied"


def test_wrong_secret_is_signature_does_not_match(store, s3):
    """A request signed with the wrong secret is refused."""
    with pytest.raises(ClientError) as e:
        client(store, "alice:p1", "not-the-secret").list_objects(Bucket="images")
    assert code(e) == "SignatureDoesNotMatch"


def test_unknown_access_key_is_invalid_access_key_id(store):
    """A key the lookup does not know is InvalidAccessKeyId."""
    with pytest.raises(ClientError) as e:
        client(store, "mallory:p1", "whatever").list_buckets()
    assert code(e) == "InvalidAccessKeyId"


@pytest.mark.parametrize("minutes", [-16, 16])
def test_stale_or_future_timestamp_is_request_time_too_skewed(tmp_path, minutes):
    """A request signed more than 15 minutes before or after the server's clock is refused."""
    with (ObjectStoreServer(tmp_path, KEYS.get, port=0, clock=lambda: time.time() - minutes * 60) as store,
          pytest.raises(ClientError) as e):
        client(store).list_buckets()
    assert code(e) == "RequestTimeTooSkewed"


def test_timestamp_within_the_window_is_accepted(tmp_path):
    """A request 14 minutes off the server's clock still passes."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0, clock=lambda: time.time() + 14 * 60) as store:
        assert client(store).list_buckets()["Buckets"] == []


def test_tampered_body_is_refused_and_not_stored(store, s3):
    """A body that does not match its signed x-amz-content-sha256 is refused; nothing is stored."""
    url = f"{store.url}/images/k"
    headers = sign_headers("PUT", url, "alice:p1", "alice-secret", payload_hash=hashlib.sha256(b"good").hexdigest())
    conn = http.client.HTTPConnection(store.host, store.port, timeout=10)
    conn.request("PUT", "/images/k", body=b"evil", headers=headers)
    response = conn.getresponse()
    assert response.status == 400 and b"XAmzContentSHA256Mismatch" in response.read()
    assert "Contents" not in s3.list_objects(Bucket="images")


def test_objects_survive_a_restart_on_the_same_root(tmp_path):
    """A new server on the same root serves the buckets and objects the old one stored."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0) as first:
        client(first).create_bucket(Bucket="images")
        client(first).put_object(Bucket="images", Key="k", Body=b"kept")
    with ObjectStoreServer(tmp_path, KEYS.get, port=0) as second:
        assert client(second).get_object(Bucket="images", Key="k")["Body"].read() == b"kept"


def test_a_file_changed_behind_the_stores_back_gets_a_fresh_etag(tmp_path):
    """The stored MD5 is trusted only while the file is unchanged; otherwise it is recomputed."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0) as store:
        s3 = client(store)
        s3.create_bucket(Bucket="images")
        s3.put_object(Bucket="images", Key="k", Body=b"old")
        (tmp_path / "images" / "k").write_bytes(b"changed")
        assert s3.head_object(Bucket="images", Key="k")["ETag"] == f'"{hashlib.md5(b"changed").hexdigest()}"'


def test_content_md5_mismatch_is_bad_digest_and_not_stored(s3):
    """A body that does not match its Content-MD5 is refused and nothing is stored."""
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="images", Key="k", Body=b"body", ContentMD5=wrong)
    assert code(e) == "BadDigest" and "Contents" not in s3.list_objects(Bucket="images")


def test_file_lookup_reads_keys_from_yaml(tmp_path):
    """file_lookup turns a YAML table into (secret, project, is_admin) answers."""
    path = tmp_path / "keys.yaml"
    path.write_text("alice: {secret: s, project: p1}\ncompute: {secret: c, project: ops, admin: true}\n")
    lookup = file_lookup(path)
    assert (lookup("alice"), lookup("compute"), lookup("bob")) == (("s", "p1", False), ("c", "ops", True), None)


@pytest.mark.parametrize("key", ["../x", "../../outside", "a/../../../x", "./x", "a/./b"])
def test_path_traversal_keys_are_refused(tmp_path, store, s3, key):
    """Keys with . or .. segments are refused and nothing lands outside the store's root."""
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="images", Key=key, Body=b"x")
    assert code(e) == "InvalidArgument"
    assert set(tmp_path.rglob("*")) - before == set()


def test_escaped_traversal_in_a_raw_request_stays_inside_the_bucket(tmp_path, store, s3):
    """A %2F-escaped key is one file name inside its bucket, never a path."""
    url = f"{store.url}/images/%2E%2E%2Foutside"
    conn = http.client.HTTPConnection(store.host, store.port, timeout=10)
    conn.request("PUT", "/images/%2E%2E%2Foutside", body=b"x", headers=sign_headers(
        "PUT", url, "alice:p1", "alice-secret", payload_hash=hashlib.sha256(b"x").hexdigest()))
    assert conn.getresponse().status == 400
    assert not (tmp_path / "outside").exists() and not (tmp_path / "root" / "outside").exists()


def test_unsupported_operations_say_not_implemented(s3):
    """Versioned copies and subresources such as ?acl are refused as NotImplemented, not half-done."""
    s3.put_object(Bucket="images", Key="k", Body=b"1")
    for call in (lambda: s3.copy_object(Bucket="images", Key="k2", CopySource="images/k?versionId=1"),
                 lambda: s3.get_bucket_acl(Bucket="images")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "NotImplemented"
    assert [o["Key"] for o in s3.list_objects(Bucket="images")["Contents"]] == ["k"]


def test_invalid_bucket_name_is_refused(store):
    """Bucket names outside S3's rules are InvalidBucketName."""
    with pytest.raises(ClientError) as e:
        client(store).create_bucket(Bucket="Has_Upper")
    assert code(e) == "InvalidBucketName"


def test_body_over_the_bound_is_entity_too_large(tmp_path):
    """A PUT larger than max_body is refused before it is stored."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0, max_body=1000) as store:
        s3 = client(store)
        s3.create_bucket(Bucket="images")
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="images", Key="big", Body=b"x" * 1001)
        assert code(e) == "EntityTooLarge"
        assert "Contents" not in s3.list_objects(Bucket="images")
