"""The object store as S3 clients nobody here wrote use it: the AWS CLI, boto3's transfer
manager, curl with a pre-signed URL; and every refusal, the HTTP server's own included,
as S3 error XML with nothing half-written."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from conftest import peak_rss  # noqa: E402

from real.api import ec2_error_document  # noqa: E402
from real.httpserver import xml_error_server  # noqa: E402
from real.objectstore import ObjectStoreServer  # noqa: E402
from real.objectstore.auth import sign_headers  # noqa: E402

KEYS = {"alice": ("alice-secret", "p1", False)}
MIB = 1024 * 1024


def client(url, signature_version="s3v4"):
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="alice:p1",
        aws_secret_access_key="alice-secret",
        config=Config(signature_version=signature_version, s3={"addressing_style": "path"},
                      retries={"total_max_attempts": 1}),
    )


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    return path


@pytest.fixture
def store(tmp_path):
    with ObjectStoreServer(tmp_path / "root", KEYS.get, port=0) as server:
        yield server


@pytest.fixture
def s3(store):
    s3 = client(store.url)
    s3.create_bucket(Bucket="files")
    return s3


def aws(url, *args, cwd=None):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "alice:p1", "AWS_SECRET_ACCESS_KEY": "alice-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    return subprocess.run(["aws", "--endpoint-url", url, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=True)


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed (pip install awscli)")
def test_aws_cli_moves_100_mib_both_ways_and_server_memory_stays_flat(served, tmp_path):
    """`aws s3 cp` up and down (multipart both ways) gives identical bytes; the server's peak RSS barely moves."""
    url, pid = served
    client(url).create_bucket(Bucket="cli")
    source = random_file(tmp_path / "big", 100 * MIB)
    before = peak_rss(pid)
    aws(url, "s3", "cp", str(source), "s3://cli/big")
    aws(url, "s3", "cp", "s3://cli/big", str(tmp_path / "back"))
    assert sha256_of(tmp_path / "back") == sha256_of(source)
    assert client(url).head_object(Bucket="cli", Key="big")["ETag"].endswith('-13"')  # 8 MiB parts
    assert peak_rss(pid) - before < 25 * MIB


def test_boto3_transfer_manager_up_and_down(s3, tmp_path):
    """upload_file / download_file with default settings (multipart, ranged parts) keep every byte."""
    source = random_file(tmp_path / "mid", 20 * MIB + 12345)
    s3.upload_file(str(source), "files", "mid")
    s3.download_file("files", "mid", str(tmp_path / "back"))
    assert sha256_of(tmp_path / "back") == sha256_of(source)
    assert s3.head_object(Bucket="files", Key="mid")["ETag"].endswith('-3"')


def test_boto3_managed_copy_of_a_multipart_object(s3, tmp_path):
    """s3.copy above the threshold copies part by part (UploadPartCopy) and keeps every byte."""
    source = random_file(tmp_path / "src", 12 * MIB)
    s3.upload_file(str(source), "files", "src")
    s3.copy({"Bucket": "files", "Key": "src"}, "files", "dst", Config=TransferConfig(multipart_chunksize=5 * MIB))
    s3.download_file("files", "dst", str(tmp_path / "back"))
    assert sha256_of(tmp_path / "back") == sha256_of(source)


# -- ranges and conditions -----------------------------------------------------------------


@pytest.mark.parametrize(("header", "body", "content_range"), [
    ("bytes=0-3", b"0123", "bytes 0-3/10"), ("bytes=7-", b"789", "bytes 7-9/10"),
    ("bytes=-4", b"6789", "bytes 6-9/10"), ("bytes=5-100", b"56789", "bytes 5-9/10"),
])
def test_ranged_get_is_206_with_content_range(s3, header, body, content_range):
    """Each Range form gives 206, just those bytes, and their Content-Range."""
    s3.put_object(Bucket="files", Key="k", Body=b"0123456789")
    got = s3.get_object(Bucket="files", Key="k", Range=header)
    assert (got["ResponseMetadata"]["HTTPStatusCode"], got["Body"].read(), got["ContentRange"]) == (
        206, body, content_range)


def test_range_past_the_end_is_416_invalid_range(s3):
    """A range starting past the end is 416 InvalidRange with Content-Range bytes */size."""
    s3.put_object(Bucket="files", Key="k", Body=b"0123456789")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="files", Key="k", Range="bytes=10-20")
    assert code(e) == "InvalidRange" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */10"


def test_conditional_gets(s3):
    """If-None-Match / If-Modified-Since give 304; If-Match / If-Unmodified-Since give 412 when they fail."""
    etag = s3.put_object(Bucket="files", Key="k", Body=b"body")["ETag"]
    modified = s3.head_object(Bucket="files", Key="k")["LastModified"]
    long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
    for kwargs, status in (({"IfNoneMatch": etag}, "304"), ({"IfModifiedSince": modified}, "304"),
                           ({"IfMatch": '"0000"'}, "412"), ({"IfUnmodifiedSince": long_ago}, "412")):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="files", Key="k", **kwargs)
        assert e.value.response["Error"]["Code"] in (status, "PreconditionFailed"), kwargs
    assert s3.get_object(Bucket="files", Key="k", IfMatch=etag)["Body"].read() == b"body"


def test_copy_object_keeps_bytes_and_metadata(s3):
    """CopyObject copies body, ETag, content type and user metadata."""
    s3.put_object(Bucket="files", Key="a", Body=b"copied", ContentType="text/plain", Metadata={"who": "alice"})
    s3.copy_object(Bucket="files", Key="b", CopySource={"Bucket": "files", "Key": "a"})
    got = s3.get_object(Bucket="files", Key="b")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"copied", "text/plain", {"who": "alice"})


# -- pre-signed URLs -----------------------------------------------------------------------


def curl(*args) -> tuple[int, bytes]:
    done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True,
                          timeout=60, check=True)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_presigned_get_and_put_work_with_curl(store, s3, tmp_path, version):
    """curl fetches and uploads with pre-signed URLs, SigV4 and SigV2 query authentication."""
    signer = client(store.url, version)
    s3.put_object(Bucket="files", Key="shared file", Body=b"for curl")
    url = signer.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "shared file"})
    assert curl(url) == (200, b"for curl")
    (tmp_path / "up").write_bytes(b"from curl")
    put = signer.generate_presigned_url("put_object", Params={"Bucket": "files", "Key": "uploaded"})
    assert curl("-T", str(tmp_path / "up"), put)[0] == 200
    assert s3.get_object(Bucket="files", Key="uploaded")["Body"].read() == b"from curl"


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_expired_or_tampered_presigned_urls_are_refused(tmp_path, version):
    """A URL past its expiry is AccessDenied; one with its key changed is SignatureDoesNotMatch."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0, clock=lambda: time.time() + 7200, max_skew=3 * 3600) as late:
        client(late.url).create_bucket(Bucket="files")
        url = client(late.url, version).generate_presigned_url(
            "get_object", Params={"Bucket": "files", "Key": "k"}, ExpiresIn=60)
        status, body = _get(url)
        assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"expired" in body
    with ObjectStoreServer(tmp_path, KEYS.get, port=0) as store:
        url = client(store.url, version).generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "k"})
        status, body = _get(url.replace("/files/k", "/files/other"))
        assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body


def _get(url) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# -- multipart uploads by hand: the refusals --------------------------------------------------


@pytest.fixture
def upload(tmp_path):
    """An upload of key 'm' with parts 1 and 2 (5 MiB and 1 byte): (s3, store, upload id, etags, root)."""
    with ObjectStoreServer(tmp_path / "root", KEYS.get, port=0) as store:
        s3 = client(store.url)
        s3.create_bucket(Bucket="files")
        upload_id = s3.create_multipart_upload(Bucket="files", Key="m")["UploadId"]
        etags = [s3.upload_part(Bucket="files", Key="m", UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
                 for n, body in ((1, b"a" * 5 * MIB), (2, b"b"))]
        yield s3, store, upload_id, etags, tmp_path / "root"


def _complete(s3, upload_id, parts):
    return s3.complete_multipart_upload(Bucket="files", Key="m", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})


def test_complete_gives_the_multipart_etag_and_the_bytes(upload):
    """Completing joins the parts; the ETag is the MD5 of the part MD5s, dash, the part count."""
    s3, _, upload_id, etags, root = upload
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="files", Key="m", UploadId=upload_id)["Parts"]] == [1, 2]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="files")["Uploads"]] == [upload_id]
    done = _complete(s3, upload_id, [(1, etags[0]), (2, etags[1])])
    md5s = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    assert s3.get_object(Bucket="files", Key="m")["Body"].read() == b"a" * 5 * MIB + b"b"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="files")
    assert os.listdir(root / "files" / ".uploads") == []


@pytest.mark.parametrize(("parts", "wanted"), [
    ([(2, 1), (1, 0)], "InvalidPartOrder"), ([(1, 0), (3, 1)], "InvalidPart"),
    ([(1, 1), (2, 1)], "InvalidPart"), ([(2, 1), (2, 1)], "InvalidPartOrder"),
])
def test_bad_part_lists_are_refused_and_the_upload_survives(upload, parts, wanted):
    """Parts out of order, missing or with the wrong ETag are refused; no object appears and the upload can still complete."""
    s3, _, upload_id, etags, _ = upload
    with pytest.raises(ClientError) as e:
        _complete(s3, upload_id, [(n, etags[i]) for n, i in parts])
    assert code(e) == wanted and "Contents" not in s3.list_objects(Bucket="files")
    _complete(s3, upload_id, [(1, etags[0]), (2, etags[1])])


def test_a_small_part_that_is_not_last_is_entity_too_small(upload):
    """Every part but the last must be at least 5 MiB."""
    s3, _, upload_id, etags, _ = upload
    small = s3.upload_part(Bucket="files", Key="m", UploadId=upload_id, PartNumber=1, Body=b"tiny")["ETag"]
    with pytest.raises(ClientError) as e:
        _complete(s3, upload_id, [(1, small), (2, etags[1])])
    assert code(e) == "EntityTooSmall"


def test_abort_removes_the_parts(upload):
    """AbortMultipartUpload removes every part; the upload is then NoSuchUpload."""
    s3, _, upload_id, _, root = upload
    s3.abort_multipart_upload(Bucket="files", Key="m", UploadId=upload_id)
    assert os.listdir(root / "files" / ".uploads") == []
    for call in (lambda: s3.list_parts(Bucket="files", Key="m", UploadId=upload_id),
                 lambda: s3.upload_part(Bucket="files", Key="m", UploadId=upload_id, PartNumber=3, Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "NoSuchUpload"


@pytest.mark.parametrize("number", [0, 10001, -1])
def test_part_numbers_outside_1_to_10000_are_invalid_argument(upload, number):
    """Part numbers are bounded as S3 bounds them."""
    _, store, upload_id, _, _ = upload
    status, body = raw(store, "PUT", f"/files/m?partNumber={number}&uploadId={upload_id}", body=b"x")
    assert status == 400 and b"<Code>InvalidArgument</Code>" in body


# -- refusals of the HTTP layer and malformed requests: XML, nothing stored, still serving ---


def raw(store, method, path, body=b"", headers=None, sign=True):
    """A request written by hand (signed unless told otherwise): (status, body)."""
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    sent = dict(headers or {})
    if sign:
        sent.update(sign_headers(method, f"{store.url}{path}", "alice:p1", "alice-secret",
                                 payload_hash=hashlib.sha256(body).hexdigest()))
    conn.request(method, path, body=body, headers=sent)
    answer = conn.getresponse()
    return answer.status, answer.read()


def send_bytes(store, data: bytes) -> tuple[int, bytes]:
    """Raw bytes on a new connection: (status, body) of the answer."""
    with socket.create_connection((store.host, store.port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def error_code(body: bytes) -> str:
    root = ET.fromstring(body)
    assert root.tag == "Error" and root.findtext("Message") and root.findtext("RequestId")
    return root.findtext("Code") or ""


@pytest.mark.parametrize(("request_bytes", "status", "wanted"), [
    (b"GET /files HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 400, "RequestHeaderSectionTooLarge"),
    (b"PUT /files/k HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400, "InvalidRequest"),
    (b"GARBAGE\r\n\r\n", 400, "InvalidRequest"),
    (b"GET /files#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, "InvalidRequest"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "InvalidURI"),
    (b"GET /files HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HttpVersionNotSupported"),
])
def test_malformed_http_gets_s3_error_xml_and_the_server_keeps_serving(store, s3, request_bytes, status, wanted):
    """What cheroot refuses itself is answered as S3 error XML; the next request is served."""
    got_status, body = send_bytes(store, request_bytes)
    assert (got_status, error_code(body)) == (status, wanted)
    assert s3.list_objects(Bucket="files")["Name"] == "files"


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "wanted"), [
    ("GET", "/files?frobnicate", b"", {}, 400, "InvalidRequest"),
    ("GET", "/files/k?acl", b"", {}, 501, "NotImplemented"),
    ("PUT", "/files/k", b"x" * 2000, {}, 400, "EntityTooLarge"),
    ("POST", "/files/k?uploads", b"", {"Content-Length": "-5"}, 400, "InvalidArgument"),
    ("POST", "/files/k?uploadId=" + "0" * 32, b"<CompleteMultipartUpload/>", {}, 404, "NoSuchUpload"),
    ("PATCH", "/files/k", b"", {}, 405, "MethodNotAllowed"),
])
def test_bad_s3_requests_are_xml_errors_that_store_nothing(tmp_path, method, path, body, headers, status, wanted):
    """Unknown subresources, bodies over the bound, bad lengths and missing uploads: XML error, nothing stored."""
    with ObjectStoreServer(tmp_path, KEYS.get, port=0, max_body=1000) as store:
        s3 = client(store.url)
        s3.create_bucket(Bucket="files")
        got_status, answer = raw(store, method, path, body, headers)
        assert (got_status, error_code(answer)) == (status, wanted)
        assert "Contents" not in s3.list_objects(Bucket="files")
        assert os.listdir(tmp_path / ".tmp") == []


def test_malformed_complete_body_is_malformed_xml(upload):
    """A CompleteMultipartUpload body that is not the schema (or declares entities) is MalformedXML."""
    _, store, upload_id, _, _ = upload
    for body in (b"<nope", b"<CompleteMultipartUpload></CompleteMultipartUpload>",
                 b'<!DOCTYPE x [<!ENTITY a "aaaa">]><CompleteMultipartUpload/>'):
        status, answer = raw(store, "POST", f"/files/m?uploadId={upload_id}", body)
        assert (status, error_code(answer)) == (400, "MalformedXML")


def test_a_broken_upload_leaves_nothing_behind(tmp_path):
    """A PUT whose client hangs up half-way stores nothing and leaves no temporary file."""
    handled = threading.Event()

    def signal_when_handled(app):
        def served(environ, start_response):
            try:
                return list(app(environ, start_response))
            finally:
                if environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"] == "/files/cut":
                    handled.set()

        return served

    with ObjectStoreServer(tmp_path / "root", KEYS.get, port=0, middleware=signal_when_handled) as store:
        s3 = client(store.url)
        s3.create_bucket(Bucket="files")
        head = sign_headers("PUT", f"{store.url}/files/cut", "alice:p1", "alice-secret",
                            payload_hash="UNSIGNED-PAYLOAD")
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        with socket.create_connection((store.host, store.port), timeout=30) as s:
            s.sendall(f"PUT /files/cut HTTP/1.1\r\n{lines}Content-Length: 1000000\r\n\r\n".encode() + b"x" * 1000)
        assert handled.wait(120), "the server never finished the broken PUT"
        assert os.listdir(tmp_path / "root" / ".tmp") == []
        assert "Contents" not in s3.list_objects(Bucket="files")


def test_the_ec2_api_answers_http_refusals_with_its_error_document():
    """Oversized headers sent to a server built for the EC2 API get the EC2 error document."""
    server = xml_error_server(("127.0.0.1", 0), lambda environ, start: [], ec2_error_document)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.bind_addr[:2], timeout=30) as s:
            s.sendall(b"POST /services/Cloud HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    finally:
        server.stop()
        thread.join(10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413"
    assert ET.fromstring(body).findtext("Errors/Error/Code") == "RequestEntityTooLarge"
