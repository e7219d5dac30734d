"""common/signing.py: the one SigV4/V2 implementation, checked against botocore's signer."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from unittest import mock
from urllib.parse import unquote

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from common import signing

NOW = 1_767_323_045.0  # 2026-01-02T03:04:05Z
ACCESS, SECRET = "AKALICE:proj1", "s3cr3t/+=key"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


def botocore_headers(auth_class, method, url, body, region, service, headers):
    """The headers botocore's signer adds to a request, its clock fixed at NOW."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    moment = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        auth_class(Credentials(ACCESS, SECRET), service, region).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def test_ec2_form_post_signs_as_botocore_does():
    """A form POST to the EC2 API gets botocore's exact Authorization header."""
    body = b"Action=DescribeInstances&Version=2010-08-31&InstanceId.1=i-00000001"
    expected = botocore_headers(SigV4Auth, "POST", "http://127.0.0.1:8773/services/Cloud", body, "nova", "ec2",
                                {"Content-Type": FORM})
    ours = signing.sign_v4("POST", "127.0.0.1:8773", "/services/Cloud", "", hashlib.sha256(body).hexdigest(),
                           access_key=ACCESS, secret_key=SECRET, region="nova", service="ec2", now=NOW,
                           headers={"content-type": FORM})
    assert ours["authorization"] == expected["authorization"]
    assert ours["x-amz-date"] == expected["x-amz-date"] == "20260102T030405Z"


def test_s3_request_with_encoded_path_and_query_signs_as_botocore_does():
    """S3 signs the path as sent, and a sorted, re-encoded query: same header as botocore's."""
    url = "http://127.0.0.1:3333/images/dir/k%C3%A9y%20x?prefix=a%2Fb&list-type=2"
    expected = botocore_headers(S3SigV4Auth, "GET", url, b"", "us-east-1", "s3", {})
    ours = signing.sign_v4("GET", "127.0.0.1:3333", "/images/dir/k%C3%A9y%20x", "prefix=a%2Fb&list-type=2",
                           signing.EMPTY_SHA256, access_key=ACCESS, secret_key=SECRET, region="us-east-1",
                           service="s3", now=NOW, headers={"x-amz-content-sha256": signing.EMPTY_SHA256})
    assert ours["authorization"] == expected["authorization"]


def test_signing_key_matches_the_aws_published_example():
    """AWS's documented derivation (secret wJalr..., 20120215, us-east-1, iam)."""
    key = signing.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_a_signed_header_parses_and_verifies_with_the_secret_only():
    """What sign_v4 makes, parse_v4_authorization reads back and matches() accepts."""
    headers = signing.sign_v4("POST", "h:1", "/p", "", signing.EMPTY_SHA256, access_key=ACCESS, secret_key=SECRET,
                              region="nova", service="ec2", now=NOW)
    auth = signing.parse_v4_authorization(headers["authorization"], "ec2")
    assert (auth.access_key, auth.date, auth.region, auth.signed_headers) == (ACCESS, "20260102", "nova",
                                                                              ("host", "x-amz-date"))
    _, to_sign = auth.string_to_sign("POST", "/p", "", headers, signing.EMPTY_SHA256, headers["x-amz-date"])
    assert auth.matches(SECRET, to_sign)
    assert not auth.matches(SECRET + "x", to_sign)


@pytest.mark.parametrize("header, service, reason", [
    ("AWS access:signature", "s3", "algorithm"),
    ("AWS4-HMAC-SHA256 Credential=a/20260102/r/s3/aws4_request", "s3", "malformed"),
    ("AWS4-HMAC-SHA256 Credential=a/20260102/r/ec2/aws4_request, SignedHeaders=host, Signature=" + "0" * 64, "s3",
     "scope"),
    ("AWS4-HMAC-SHA256 Credential=a/20260102/r/s3/aws4_request, SignedHeaders=x-amz-date, Signature=" + "0" * 64,
     "s3", "signed-headers"),
    ("AWS4-HMAC-SHA256 Credential=a/20260102/r/s3/aws4_request, SignedHeaders=host, Signature=XYZ", "s3",
     "signature"),
])
def test_a_bad_authorization_header_names_the_part_that_is_wrong(header, service, reason):
    """Each malformed header raises SignatureError with the reason a server maps to its code."""
    with pytest.raises(signing.SignatureError) as caught:
        signing.parse_v4_authorization(header, service)
    assert caught.value.reason == reason


@pytest.mark.parametrize("method, digest", [("HmacSHA256", hashlib.sha256), ("HmacSHA1", hashlib.sha1)])
def test_version_2_signature_is_hmac_of_the_documented_string(method, digest):
    """V2 signs VERB, lower-case host, path and the sorted RFC 3986 query."""
    params = {"Action": "DescribeImages", "b": "x y", "Signature": "ignored"}
    to_sign = signing.string_to_sign_v2("GET", "EC2.Example:8773", "/services/Cloud", params)
    assert to_sign == "GET\nec2.example:8773\n/services/Cloud\nAction=DescribeImages&b=x%20y"
    expected = base64.b64encode(hmac.new(SECRET.encode(), to_sign.encode(), digest).digest()).decode()
    assert signing.v2_signature(SECRET, to_sign, method) == expected
    assert signing.v2_matches(SECRET, to_sign, method, expected)


# -- pre-signed v4 URLs and S3's version 2 -------------------------------------------------

EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_NOW = 1369353600  # 2013-05-24T00:00:00Z


def _presigned_example() -> str:
    return signing.presign_v4("GET", "examplebucket.s3.amazonaws.com", "/test.txt", "",
                              access_key="AKIAIOSFODNN7EXAMPLE", secret_key=EXAMPLE_SECRET, region="us-east-1",
                              service="s3", now=EXAMPLE_NOW, expires=86400)


def test_presign_v4_matches_the_published_example():
    """The pre-signed URL of AWS's documented example carries its documented signature."""
    assert _presigned_example().endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


def test_a_presigned_query_verifies_and_a_changed_path_does_not():
    """parse_v4_query plus the string to sign accept the URL's own path and refuse another."""
    query = _presigned_example()
    params = dict(p.split("=", 1) for p in query.split("&"))
    params = {k: unquote(v) for k, v in params.items()}
    presigned = signing.parse_v4_query(params, "s3")
    headers = {"host": "examplebucket.s3.amazonaws.com"}
    assert presigned.auth.matches(EXAMPLE_SECRET, presigned.string_to_sign("GET", "/test.txt", query, headers)[1])
    assert not presigned.auth.matches(EXAMPLE_SECRET, presigned.string_to_sign("GET", "/other", query, headers)[1])


@pytest.mark.parametrize("expires", ["0", "604801", "soon"])
def test_presigned_expiry_outside_one_second_to_seven_days_is_refused(expires):
    """X-Amz-Expires must be 1 s to 7 days."""
    params = {"X-Amz-Algorithm": signing.V4_ALGORITHM, "X-Amz-Credential": "a/20130524/us-east-1/s3/aws4_request",
              "X-Amz-Date": "20130524T000000Z", "X-Amz-Expires": expires, "X-Amz-SignedHeaders": "host",
              "X-Amz-Signature": "0" * 64}
    with pytest.raises(signing.SignatureError) as e:
        signing.parse_v4_query(params, "s3")
    assert e.value.reason == "expires"


def test_s3_v2_string_to_sign_keeps_subresources_and_amz_headers():
    """S3's v2 string signs the path, the subresources (sorted) and the x-amz-* headers, not other parameters."""
    to_sign = signing.s3_v2_string_to_sign("PUT", "/b/k", "uploadId=7&partNumber=2&foo=bar",
                                           {"content-type": "text/plain", "x-amz-meta-b": "2", "x-amz-meta-a": "1"},
                                           "1700000000")
    assert to_sign == "PUT\n\ntext/plain\n1700000000\nx-amz-meta-a:1\nx-amz-meta-b:2\n/b/k?partNumber=2&uploadId=7"
