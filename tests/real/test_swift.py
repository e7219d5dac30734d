"""The Swift (Cloud Files) API of the object store as python-swiftclient's ``swift``
command uses it, unmodified; the same objects through S3 (boto3); and the refusals,
each a Swift status with nothing stored."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import peak_rss

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from botocore.config import Config  # noqa: E402

from real.objectstore import ObjectStoreServer  # noqa: E402
from real.objectstore.swift_auth import Tokens  # noqa: E402

KEYS = {"alice": ("alice-secret", "p1", False), "bob": ("bob-secret", "p2", False),
        "root": ("root-secret", "ops", True)}
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("swift") is None and not os.environ.get("CI"),
                                reason="python-swiftclient is not installed (pip install -e .[test])")


@pytest.fixture
def store(tmp_path):
    with ObjectStoreServer(tmp_path / "root", KEYS.get, port=0) as server:
        yield server


def swift(url, *args, cwd, user="p1:alice", key="alice-secret", check=True):
    """The ``swift`` command against ``url`` (auth v1.0): its CompletedProcess."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ST_", "OS_"))},
           "ST_AUTH": f"{url}/auth/v1.0", "ST_USER": user, "ST_KEY": key}
    done = subprocess.run(["swift", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def s3(url):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="alice:p1",
                        aws_secret_access_key="alice-secret",
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))


def random_file(path, size):
    path.write_bytes(os.urandom(size))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stat_lines(output: str) -> dict:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in output.splitlines()) if v}


# -- raw requests -------------------------------------------------------------------------


def token(store, user="p1:alice", key="alice-secret") -> tuple[int, dict]:
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
    answer = conn.getresponse()
    answer.read()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}


def call(store, method, path, body=b"", headers=None, auth=True) -> tuple[int, dict, bytes]:
    """A request to the Swift API written by hand, with alice's token: (status, headers, body)."""
    sent = dict(headers or {})
    if auth:
        sent["X-Auth-Token"] = token(store)[1]["x-auth-token"]
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    conn.request(method, path, body=body, headers=sent)
    answer = conn.getresponse()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


# -- the swift command ---------------------------------------------------------------------


def test_upload_list_stat_download_delete(store, tmp_path):
    """swift upload / list / stat / download / delete round-trip a file with its metadata."""
    (tmp_path / "notes.txt").write_bytes(b"hello swift\n")
    swift(store.url, "upload", "docs", "notes.txt", "-m", "Color:blue", cwd=tmp_path)
    assert swift(store.url, "list", cwd=tmp_path).stdout.split() == ["docs"]
    assert swift(store.url, "list", "docs", cwd=tmp_path).stdout.split() == ["notes.txt"]
    stat = stat_lines(swift(store.url, "stat", "docs", "notes.txt", cwd=tmp_path).stdout)
    assert (stat["Content Length"], stat["Meta Color"], stat["Content Type"]) == ("12", "blue", "text/plain")
    swift(store.url, "download", "docs", "notes.txt", "-o", "back.txt", cwd=tmp_path)
    assert (tmp_path / "back.txt").read_bytes() == b"hello swift\n"
    swift(store.url, "delete", "docs", "notes.txt", cwd=tmp_path)
    assert swift(store.url, "list", "docs", cwd=tmp_path).stdout == ""


def test_account_and_container_stat_count_objects(store, tmp_path):
    """swift stat of the account and of a container report containers, objects and bytes."""
    random_file(tmp_path / "a", 1000)
    swift(store.url, "upload", "box", "a", cwd=tmp_path)
    account = stat_lines(swift(store.url, "stat", cwd=tmp_path).stdout)
    assert (account["Account"], account["Containers"], account["Objects"], account["Bytes"]) == (
        "AUTH_p1", "1", "1", "1000")
    container = stat_lines(swift(store.url, "stat", "box", cwd=tmp_path).stdout)
    assert (container["Objects"], container["Bytes"]) == ("1", "1000")


@pytest.mark.parametrize("mode", ["slo", "dlo"])
def test_segmented_upload_downloads_whole_and_deletes_its_segments(store, tmp_path, mode):
    """--segment-size makes a static large object (what /info offers; --use-dlo a dynamic one) that downloads whole."""
    source = random_file(tmp_path / "big", 3 * MIB + 12345)
    swift(store.url, "upload", "--segment-size", str(MIB), *(["--use-dlo"] if mode == "dlo" else []), "media", "big",
          cwd=tmp_path)
    assert len(swift(store.url, "list", "media_segments", cwd=tmp_path).stdout.split()) == 4
    stat = stat_lines(swift(store.url, "stat", "media", "big", cwd=tmp_path).stdout)
    assert stat["Content Length"] == str(3 * MIB + 12345)
    assert ("X-Static-Large-Object" in stat) == (mode == "slo") and ("Manifest" in stat) == (mode == "dlo")
    swift(store.url, "download", "media", "big", "-o", "back", cwd=tmp_path)
    assert sha((tmp_path / "back").read_bytes()) == sha(source.read_bytes())
    swift(store.url, "delete", "media", "big", cwd=tmp_path)
    assert swift(store.url, "list", "media_segments", cwd=tmp_path).stdout == ""


def test_swift_uploads_are_seen_by_s3(store, tmp_path):
    """An object and a large object uploaded with swift download through S3 whole, ranged and with metadata."""
    source = random_file(tmp_path / "big", 2 * MIB + 7)
    (tmp_path / "small").write_bytes(b"small one")
    swift(store.url, "upload", "--segment-size", str(MIB), "shared", "big", "small", "-m", "Owner:alice",
          cwd=tmp_path)
    client = s3(store.url)
    small = client.get_object(Bucket="shared", Key="small")
    assert (small["Body"].read(), small["Metadata"]["owner"]) == (b"small one", "alice")
    big = client.get_object(Bucket="shared", Key="big")
    assert sha(big["Body"].read()) == sha(source.read_bytes()) and big["ETag"].endswith('-3"')
    across = client.get_object(Bucket="shared", Key="big", Range=f"bytes={MIB - 5}-{MIB + 4}")
    assert across["Body"].read() == source.read_bytes()[MIB - 5:MIB + 5]
    sizes = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket="shared")["Contents"]}
    assert sizes == {"big": 2 * MIB + 7, "small": 9}


def test_s3_uploads_are_seen_by_swift(store, tmp_path):
    """A multipart upload and a small object put with boto3 list, stat and download with swift (MD5 checked)."""
    client = s3(store.url)
    client.create_bucket(Bucket="froms3")
    source = random_file(tmp_path / "big", 11 * MIB)
    client.upload_file(str(source), "froms3", "big")  # 8 MiB parts: a multipart ETag
    client.put_object(Bucket="froms3", Key="dir/small", Body=b"x", Metadata={"color": "red"})
    assert swift(store.url, "list", "froms3", cwd=tmp_path).stdout.split() == ["big", "dir/small"]
    swift(store.url, "download", "froms3", "big", "-o", "back", cwd=tmp_path)
    assert sha((tmp_path / "back").read_bytes()) == sha(source.read_bytes())
    stat = stat_lines(swift(store.url, "stat", "froms3", "dir/small", cwd=tmp_path).stdout)
    assert (stat["Meta Color"], stat["ETag"]) == ("red", hashlib.md5(b"x").hexdigest())


def test_post_and_copy(store, tmp_path):
    """swift post sets container and object metadata; swift copy copies bytes and metadata."""
    (tmp_path / "a").write_bytes(b"aaa")
    swift(store.url, "upload", "box", "a", "-m", "Old:1", cwd=tmp_path)
    swift(store.url, "post", "box", "-m", "Team:blue", cwd=tmp_path)
    assert stat_lines(swift(store.url, "stat", "box", cwd=tmp_path).stdout)["Meta Team"] == "blue"
    swift(store.url, "post", "box", "a", "-m", "New:2", cwd=tmp_path)
    stat = stat_lines(swift(store.url, "stat", "box", "a", cwd=tmp_path).stdout)
    assert stat["Meta New"] == "2" and "Meta Old" not in stat  # POST replaces the user metadata
    swift(store.url, "copy", "box", "a", "--destination", "/box/b", cwd=tmp_path)
    swift(store.url, "download", "box", "b", "-o", "b", cwd=tmp_path)
    assert (tmp_path / "b").read_bytes() == b"aaa"
    assert stat_lines(swift(store.url, "stat", "box", "b", cwd=tmp_path).stdout)["Meta New"] == "2"


def test_wrong_key_unknown_user_and_other_project_are_refused(store, tmp_path):
    """Bad credentials fail with 401 (one message whatever was wrong); a project the user is not in too."""
    for user, key in (("p1:alice", "wrong"), ("p1:nobody", "alice-secret"), ("p2:alice", "alice-secret")):
        status, _ = token(store, user, key)
        assert status == 401, (user, key)
        assert swift(store.url, "list", cwd=tmp_path, user=user, key=key, check=False).returncode == 1
    assert token(store, "ops:root", "root-secret")[0] == 200  # an admin may act for any project


def test_a_token_reaches_its_own_account_only(store):
    """A token for p1 cannot list account AUTH_p2 (403), unless the user is an admin."""
    status, _, _ = call(store, "GET", "/v1/AUTH_p2")
    assert status == 403
    assert call(store, "GET", "/v1/AUTH_p1", headers={"X-Auth-Token": "AUTH_tknotatoken"}, auth=False)[0] == 401


# -- protocol details and refusals -----------------------------------------------------------


def test_info_offers_static_large_objects(store):
    """GET /info (no token) lists slo with its limits, so swift upload --segment-size uses it."""
    status, _, body = call(store, "GET", "/info", auth=False)
    info = json.loads(body)
    assert status == 200 and info["slo"]["max_manifest_segments"] == 1000 and "swift" in info


def test_listing_formats_and_windows(store):
    """Container listings in plain, JSON and XML with prefix, delimiter, marker and limit."""
    call(store, "PUT", "/v1/AUTH_p1/lst")
    for name in ("a/1", "a/2", "b", "c"):
        call(store, "PUT", f"/v1/AUTH_p1/lst/{name}", body=name.encode())
    assert call(store, "GET", "/v1/AUTH_p1/lst?delimiter=/")[2] == b"a/\nb\nc\n"
    entries = json.loads(call(store, "GET", "/v1/AUTH_p1/lst?format=json&prefix=a/&limit=1")[2])
    assert [(e["name"], e["bytes"], e["hash"]) for e in entries] == [("a/1", 3, hashlib.md5(b"a/1").hexdigest())]
    assert call(store, "GET", "/v1/AUTH_p1/lst?marker=b")[2] == b"c\n"
    assert b"<name>a/2</name>" in call(store, "GET", "/v1/AUTH_p1/lst", headers={"Accept": "application/xml"})[2]
    assert call(store, "GET", "/v1/AUTH_p1/lst?prefix=zz")[0] == 204
    assert call(store, "GET", "/v1/AUTH_p1/lst?limit=10001")[0] == 412


def test_ranged_and_conditional_get(store):
    """Range gives 206 and Content-Range (416 past the end); If-None-Match with the ETag gives 304."""
    call(store, "PUT", "/v1/AUTH_p1/r")
    status, headers, _ = call(store, "PUT", "/v1/AUTH_p1/r/k", body=b"0123456789")
    assert status == 201
    status, headers, body = call(store, "GET", "/v1/AUTH_p1/r/k", headers={"Range": "bytes=2-4"})
    assert (status, body, headers["content-range"]) == (206, b"234", "bytes 2-4/10")
    assert call(store, "GET", "/v1/AUTH_p1/r/k", headers={"Range": "bytes=20-"})[0] == 416
    assert call(store, "GET", "/v1/AUTH_p1/r/k", headers={"If-None-Match": headers["etag"]})[0] == 304


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), [
    ("PUT", "/v1/AUTH_p1/bad/k", b"body", {"ETag": "0" * 32}, 422),
    ("PUT", "/v1/AUTH_p1/bad/k?multipart-manifest=put", b"not json", {}, 400),
    ("PUT", "/v1/AUTH_p1/bad/k?multipart-manifest=put", b'[{"path": "/bad/missing"}]', {}, 400),
    ("PUT", "/v1/AUTH_p1/bad/k", b"x", {"X-Object-Meta-Big": "v" * 300}, 400),
    ("PUT", "/v1/AUTH_p1/bad/k", b"x", {"X-Delete-After": "60"}, 501),
    ("PUT", "/v1/AUTH_p1/bad/" + "k" * 1100, b"x", {}, 400),
    ("PUT", "/v1/AUTH_p1/no_such/k", b"x", {}, 404),
    ("PUT", "/v1/AUTH_p1/bad%20name", b"", {}, 400),
    ("GET", "/v1/AUTH_p1/bad/missing", b"", {}, 404),
    ("DELETE", "/v1/AUTH_p1/bad/missing", b"", {}, 404),
    ("PATCH", "/v1/AUTH_p1/bad/k", b"", {}, 405),
])
def test_bad_requests_get_swift_statuses_and_store_nothing(store, tmp_path, method, path, body, headers, status):
    """Bad input is a short text error with Swift's status; nothing is stored and the server keeps serving."""
    call(store, "PUT", "/v1/AUTH_p1/bad")
    got, answer_headers, answer = call(store, method, path, body, headers)
    assert got == status and answer_headers["content-type"].startswith("text/plain") and answer, answer
    assert call(store, "GET", "/v1/AUTH_p1/bad")[0] == 204  # empty, and still serving
    assert os.listdir(tmp_path / "root" / ".tmp") == []


def test_deleting_a_container_that_holds_objects_is_409(store):
    """DELETE of a non-empty container is 409 Conflict and keeps it; once empty it goes (204)."""
    call(store, "PUT", "/v1/AUTH_p1/full")
    call(store, "PUT", "/v1/AUTH_p1/full/k", body=b"x")
    assert call(store, "DELETE", "/v1/AUTH_p1/full")[0] == 409
    assert call(store, "DELETE", "/v1/AUTH_p1/full/k")[0] == 204
    assert call(store, "DELETE", "/v1/AUTH_p1/full")[0] == 204


def test_a_container_name_another_project_has_is_409(store):
    """Containers are S3 buckets, one namespace: another project's name is 409, its objects untouched."""
    client = s3(store.url)
    client.create_bucket(Bucket="taken")
    client.put_object(Bucket="taken", Key="k", Body=b"mine")
    _, headers = token(store, "p2:bob", "bob-secret")
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    conn.request("PUT", "/v1/AUTH_p2/taken", headers={"X-Auth-Token": headers["x-auth-token"]})
    assert conn.getresponse().status == 409
    assert client.get_object(Bucket="taken", Key="k")["Body"].read() == b"mine"


def test_a_chunked_put_is_stored(store):
    """A PUT with Transfer-Encoding: chunked (no Content-Length) stores every byte."""
    call(store, "PUT", "/v1/AUTH_p1/ch")
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    conn.request("PUT", "/v1/AUTH_p1/ch/k", body=iter([b"abc", b"defg"]),
                 headers={"X-Auth-Token": token(store)[1]["x-auth-token"]})  # no length: chunked
    assert conn.getresponse().status == 201
    assert call(store, "GET", "/v1/AUTH_p1/ch/k")[2] == b"abcdefg"


def test_tokens_expire_and_the_table_is_bounded():
    """A token stops working after its lifetime; the table keeps at most its limit, dropping the oldest."""
    now = [1000.0]
    tokens = Tokens(clock=lambda: now[0], lifetime=60, limit=3)
    first, _ = tokens.issue("alice", "p1", False, "s")
    assert tokens.get(first) is not None
    now[0] += 61
    assert tokens.get(first) is None
    issued = [tokens.issue("alice", "p1", False, "s")[0] for _ in range(5)]
    assert len(tokens) == 3 and tokens.get(issued[0]) is None and tokens.get(issued[-1]) is not None


def test_a_changed_secret_stops_the_token(tmp_path):
    """Each request asks the credentials again: a token issued before the secret changed is refused (401)."""
    keys = dict(KEYS)
    with ObjectStoreServer(tmp_path, lambda access: keys.get(access), port=0) as server:
        issued = token(server)[1]["x-auth-token"]
        assert call(server, "GET", "/v1/AUTH_p1", headers={"X-Auth-Token": issued}, auth=False)[0] == 204
        keys["alice"] = ("new-secret", "p1", False)
        assert call(server, "GET", "/v1/AUTH_p1", headers={"X-Auth-Token": issued}, auth=False)[0] == 401


def test_server_memory_stays_flat_for_a_large_swift_object(served, tmp_path):
    """64 MiB up and down with swift (segmented and not) barely moves the server's peak RSS."""
    url, pid = served
    source = random_file(tmp_path / "big", 64 * MIB)
    before = peak_rss(pid)
    start = time.monotonic()
    swift(url, "upload", "mem", "big", cwd=tmp_path)
    swift(url, "upload", "--segment-size", str(16 * MIB), "mem", "big", "--object-name", "segmented", cwd=tmp_path)
    for name in ("big", "segmented"):
        swift(url, "download", "mem", name, "-o", name + ".back", cwd=tmp_path)
        assert sha((tmp_path / f"{name}.back").read_bytes()) == sha(source.read_bytes())
    assert peak_rss(pid) - before < 25 * MIB, time.monotonic() - start


def test_a_malformed_chunked_body_is_400_and_stores_nothing(store, tmp_path):
    """A chunked PUT whose chunk sizes are not hex is refused (400), nothing is stored, the server keeps serving."""
    import socket

    call(store, "PUT", "/v1/AUTH_p1/ch")
    head = (f"PUT /v1/AUTH_p1/ch/k HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token(store)[1]['x-auth-token']}\r\n"
            "Transfer-Encoding: chunked\r\n\r\nnothex\r\nabc\r\n0\r\n\r\n")
    with socket.create_connection((store.host, store.port), timeout=30) as s:
        s.sendall(head.encode())
        answer = s.recv(65536)
    assert answer.split()[1] == b"400"
    assert call(store, "GET", "/v1/AUTH_p1/ch/k")[0] == 404
    assert os.listdir(tmp_path / "root" / ".tmp") == []
