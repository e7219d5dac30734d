"""EC2 Query API: signatures v2 and v4, the time window, parameters, XML, errors, and
that bad input creates nothing.

The signatures are computed here, independently, with hmac (from AWS's published
descriptions of the two versions), and checked against AWS's own published v4 examples.
"""

import base64
import datetime
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode

import pytest
from records import registered_image
from tiny_store import TinyStore

from common import keypairs, keys, signing
from common.cloud import MAX_COUNT_PER_REQUEST, CloudConfig, CloudController, Quota
from common.directory import UNAUTHENTICATED, Project, User
from common.ec2 import ACTIONS, Ec2Api, HttpRequest
from common.ec2.errors import MissingParameter, http_status
from common.ec2.inprocess import signed_request, trusted_request
from common.ec2.params import parse_args
from common.ec2.render import render_error, render_response
from common.ec2.request import credentials_v4, parse_message
from common.effects import Call, Cast, HGet, HGetAll, LdapSearch, Now, SMembers, StoreCommand, Transaction
from common.errors import AuthFailure, NotAuthorized, NovaError, QuotaExceeded, RemoteError
from common.network import FlatManager, NetworkConfig

NS = "{http://ec2.amazonaws.com/doc/2010-08-31/}"
HOST = "127.0.0.1:8773"
PATH = "/services/Cloud"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
SECRET = "s3cr3t/+=key"
ACCESS = "AKALICE:proj1"

ALICE = User("alice", "AKALICE", SECRET, False)
BOB = User("bob", "AKBOB", "bob-secret", False)
PROJECT = Project("proj1", "alice", "", ("alice", "bob"))


# ---------------------------------------------------------------------------
# Independent signers (from AWS's descriptions; no code shared with common.ec2)


def enc(text):
    return quote(text, safe="-_.~")


def amz(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_v4(params, secret=SECRET, access=ACCESS, at=NOW, region="nova", service="ec2", body=None,
            extra_headers=None, method="POST"):
    """A boto3-style v4 POST: form body, headers content-type;host;x-amz-date."""
    body = urlencode(params).encode() if body is None else body
    stamp = amz(at)
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "host": HOST, "x-amz-date": stamp,
               **(extra_headers or {})}
    names = sorted(headers)
    canonical = "\n".join([
        method, PATH, "", "".join(f"{n}:{headers[n]}\n" for n in names), ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac256(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return HttpRequest(method, PATH, "", headers, body, request_id="req-1")


def sign_v2(params, secret=SECRET, access=ACCESS, at=NOW, method="HmacSHA256", verb="POST", expires=None):
    params = {**params, "AWSAccessKeyId": access, "SignatureVersion": "2", "SignatureMethod": method}
    if expires is None:
        params["Timestamp"] = iso(at)
    else:
        params["Expires"] = iso(expires)
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    to_sign = f"{verb}\n{HOST}\n{PATH}\n{query}"
    digest = hashlib.sha256 if method == "HmacSHA256" else hashlib.sha1
    params["Signature"] = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), digest).digest()).decode()
    encoded = urlencode(params)
    headers = {"host": HOST}
    if verb == "GET":
        return HttpRequest("GET", PATH, encoded, headers, b"", request_id="req-1")
    headers["content-type"] = "application/x-www-form-urlencoded"
    return HttpRequest("POST", PATH, "", headers, encoded.encode(), request_id="req-1")


# ---------------------------------------------------------------------------
# Driving the API: a stub directory and a store


class StubDirectory:
    """The common.directory interface, one (recognisable) LDAP search per call."""

    def __init__(self, users=(ALICE, BOB), denied=()):
        self.users = {u.access_key: u for u in users}
        self.denied = set(denied)  # (user name, action)

    def authenticate(self, access, verify=None):
        key, _, project = access.partition(":")
        yield LdapSearch("ou=Users,stub", f"(accessKey={key})")
        user = self.users.get(key)
        if verify is not None and (user is None or not verify(user)):
            raise AuthFailure(UNAUTHENTICATED)
        if user is None:
            raise AuthFailure(f"unknown access key {key!r}")
        if project != PROJECT.name:
            raise AuthFailure(f"no project {project!r}")
        return user, PROJECT

    def authorize(self, user, project, action):
        if (user.name, action) in self.denied:
            yield LdapSearch("ou=Groups,stub", f"(member={user.name})")
            raise NotAuthorized(f"{action} needs the role netadmin")
        return None
        yield


def make_api(quota=Quota(instances=3, cores=6, floating_ips=2), **kw):
    cloud = CloudController(CloudConfig(quotas={"proj1": quota}),
                            FlatManager(NetworkConfig(fixed_range="10.0.0.0/28")))
    return Ec2Api(cloud, StubDirectory(**kw))


class World(TinyStore):
    """TinyStore plus the directory's searches, key generation and RPC replies."""

    def __init__(self, data=None, calls=None):
        super().__init__({**registered_image(), **(data if data is not None else {})}, now=NOW)
        self.calls = calls or {}

    def answer(self, e):
        if isinstance(e, LdapSearch):
            return ()
        if isinstance(e, keypairs.GenerateKeyPair):
            return ("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
                    "ssh-rsa " + base64.b64encode(b"public-blob").decode() + " alice@novalab")
        if isinstance(e, Call):
            reply = self.calls.get(e.method)
            if isinstance(reply, BaseException):
                raise reply
            return reply
        if isinstance(e, SMembers):
            return set(self.data.get(e.key, set()))
        return super().answer(e)


def drive(api, request, world=None):
    """Run one request to its response; -> (response, effects)."""
    world = world if world is not None else World()
    gen = api.handle(request)
    effects, reply = [], None
    for _ in range(1000):
        try:
            effect = gen.send(reply) if not isinstance(reply, BaseException) else gen.throw(reply)
        except StopIteration as stop:
            return stop.value, effects
        effects.append(effect)
        try:
            reply = world.answer(effect)
        except Exception as e:  # thrown back in, as a runner does
            reply = e
    raise AssertionError("the request did not finish")


def xml(response):
    return ET.fromstring(response.body)


def error_of(response):
    root = xml(response)
    return root.findtext("Errors/Error/Code"), root.findtext("Errors/Error/Message")


READS = (HGet, HGetAll, SMembers, LdapSearch, Now)


def writes(effects):
    """Effects that change something or send a message (everything but reads)."""
    return [e for e in effects if not isinstance(e, READS)]


# ---------------------------------------------------------------------------
# Signature version 4


def test_v4_signing_key_matches_the_aws_published_example():
    """AWS's documented derivation (secret wJalr..., 20120215, us-east-1, iam)."""
    key = signing.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_v4_aws_test_suite_get_vanilla_verifies():
    """AWS SigV4 test suite 'get-vanilla': the published signature checks out."""
    request = HttpRequest(
        "GET", "/", "", {
            "host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                             "SignedHeaders=host;x-amz-date, "
                             "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        }, b"")
    with pytest.raises(MissingParameter):  # no Action: but the credentials parse first
        parse_message(request, service="service")
    creds = credentials_v4(request, request.headers["authorization"], "service")
    assert creds.access_key == "AKIDEXAMPLE"
    assert creds.verify("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    assert not creds.verify("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEy")


def test_v4_aws_iam_list_users_example_verifies():
    """AWS's documented GET ?Action=ListUsers example (content-type signed)."""
    request = HttpRequest(
        "GET", "/", "Action=ListUsers&Version=2010-05-08", {
            "host": "iam.amazonaws.com", "x-amz-date": "20150830T123600Z",
            "content-type": "application/x-www-form-urlencoded; charset=utf-8",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
                             "SignedHeaders=content-type;host;x-amz-date, "
                             "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        }, b"")
    message = parse_message(request, service="iam")
    assert message.action == "ListUsers"
    assert message.credentials.timestamp == datetime.datetime(2015, 8, 30, 12, 36, tzinfo=datetime.UTC).timestamp()
    assert message.credentials.verify("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_v4_request_signed_here_is_accepted_in_any_region():
    for region in ("nova", "us-east-1", "anything"):
        response, _ = drive(make_api(), sign_v4({"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"},
                                                region=region))
        assert response.status == 200, response.body
        assert xml(response).findtext(f"{NS}availabilityZoneInfo/{NS}item/{NS}zoneName") == "nova"


@pytest.mark.parametrize("change, fragment", [
    (lambda r: HttpRequest(r.method, r.path, r.query, r.headers, r.body + b"&x=1", r.request_id), "signature"),
    (lambda r: HttpRequest(r.method, r.path, r.query, {**r.headers, "host": "evil:80"}, r.body, r.request_id),
     "signature"),
    (lambda r: HttpRequest(r.method, "/services/Other", r.query, r.headers, r.body, r.request_id), "signature"),
    (lambda r: HttpRequest(r.method, r.path, "Version=2010-08-31", r.headers, r.body, r.request_id), "signature"),
])
def test_v4_tampered_request_is_refused(change, fragment):
    request = change(sign_v4({"Action": "DescribeAvailabilityZones"}))
    response, effects = drive(make_api(), request)
    assert (response.status, error_of(response)[0]) == (401, "AuthFailure")
    assert fragment in error_of(response)[1]
    assert writes(effects) == []


def test_v4_wrong_secret_and_unknown_key_are_auth_failures():
    for request in (sign_v4({"Action": "DescribeInstances"}, secret="guess"),
                    sign_v4({"Action": "DescribeInstances"}, access="AKNOBODY:proj1")):
        response, _ = drive(make_api(), request)
        assert (response.status, error_of(response)[0]) == (401, "AuthFailure")


@pytest.mark.parametrize("mutate, fragment", [
    (lambda h: {**h, "authorization": h["authorization"].replace("/ec2/", "/s3/")}, "service"),
    (lambda h: {**h, "authorization": h["authorization"].replace("aws4_request", "aws5_request")}, "Credential"),
    (lambda h: {**h, "authorization": h["authorization"].replace("content-type;host;x-amz-date", "content-type;x-amz-date")},
     "include host"),
    (lambda h: {**h, "authorization": "AWS " + h["authorization"]}, "unsupported"),
    (lambda h: {**h, "authorization": h["authorization"].split(", Signature")[0]}, "Signature"),
    (lambda h: {k: v for k, v in h.items() if k != "x-amz-date"}, "X-Amz-Date"),
    (lambda h: {**h, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, "UNSIGNED-PAYLOAD"),
    (lambda h: {**h, "x-amz-content-sha256": "0" * 64}, "SHA-256"),
])
def test_v4_malformed_credentials_are_refused_with_a_reason(mutate, fragment):
    signed = sign_v4({"Action": "DescribeInstances"})
    request = HttpRequest(signed.method, signed.path, signed.query, mutate(dict(signed.headers)), signed.body, "req-1")
    response, effects = drive(make_api(), request)
    assert (response.status, error_of(response)[0]) == (401, "AuthFailure")
    assert fragment in error_of(response)[1]
    assert effects == [] or all(isinstance(e, Now) for e in effects)


def test_v4_content_sha256_header_equal_to_the_body_hash_is_fine():
    params = {"Action": "DescribeAvailabilityZones"}
    body = urlencode(params).encode()
    request = sign_v4(params, extra_headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    assert drive(make_api(), request)[0].status == 200


# ---------------------------------------------------------------------------
# Signature version 2


@pytest.mark.parametrize("method", ["HmacSHA256", "HmacSHA1"])
@pytest.mark.parametrize("verb", ["POST", "GET"])
def test_v2_signed_here_is_accepted(method, verb):
    request = sign_v2({"Action": "DescribeAvailabilityZones", "Version": "2010-08-31"}, method=method, verb=verb)
    response, _ = drive(make_api(), request)
    assert response.status == 200, response.body


def test_v2_canonical_query_sorts_by_name_and_encodes_rfc3986():
    assert signing.canonical_query_v2({"b": "x y", "a": "1/2~", "Signature": "drop", "B": "*"}) == "B=%2A&a=1%2F2~&b=x%20y"


@pytest.mark.parametrize("build", [
    lambda: sign_v2({"Action": "DescribeInstances"}, secret="nope"),
    lambda: sign_v2({"Action": "DescribeInstances"}, method="HmacMD5"),
    lambda: HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded"},
                        sign_v2({"Action": "DescribeInstances"}).body.replace(b"SignatureVersion=2", b"SignatureVersion=1")),
    lambda: HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded"},
                        sign_v2({"Action": "DescribeInstances"}).body + b"&Expires=2030-01-01T00%3A00%3A00Z"),
    lambda: HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded"},
                        sign_v2({"Action": "DescribeInstances"}).body.replace(b"DescribeInstances", b"DescribeImages")),
    lambda: HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded"},
                        b"Action=DescribeInstances"),
])
def test_v2_bad_signatures_are_auth_failures(build):
    response, effects = drive(make_api(), build())
    assert (response.status, error_of(response)[0]) == (401, "AuthFailure"), response.body
    assert writes(effects) == []


# ---------------------------------------------------------------------------
# The time window


@pytest.mark.parametrize("offset, ok", [
    (0, True), (-14 * 60, True), (-15 * 60 - 1, False), (-3600, False), (4 * 60, True), (5 * 60 + 1, False),
])
def test_timestamp_window(offset, ok):
    """Up to 15 minutes old and 5 minutes ahead; outside it AuthFailure before the directory is asked."""
    for request in (sign_v4({"Action": "DescribeAvailabilityZones"}, at=NOW + offset),
                    sign_v2({"Action": "DescribeAvailabilityZones"}, at=NOW + offset)):
        response, effects = drive(make_api(), request)
        if ok:
            assert response.status == 200, response.body
        else:
            assert (response.status, error_of(response)[0]) == (401, "AuthFailure")
            assert "expired" in error_of(response)[1] or "future" in error_of(response)[1]
            assert effects == [Now()]


def test_v2_expires_instead_of_timestamp():
    ok = sign_v2({"Action": "DescribeAvailabilityZones"}, expires=NOW + 60)
    assert drive(make_api(), ok)[0].status == 200
    for expires in (NOW - 1, NOW + 16 * 60):
        response, _ = drive(make_api(), sign_v2({"Action": "DescribeAvailabilityZones"}, expires=expires))
        assert (response.status, error_of(response)[0]) == (401, "AuthFailure")


# ---------------------------------------------------------------------------
# Parameters


def parse(action, **params):
    return parse_args(action, {"Action": action, **params}, make_api())


def test_list_parameters_are_ordered_by_index_and_deduplicated():
    args = parse("TerminateInstances", **{"InstanceId.10": "i-c", "InstanceId.2": "i-b", "InstanceId.1": "i-a",
                                         "InstanceId.3": "i-a"})
    assert args["instance_ids"] == ("i-a", "i-b", "i-c")


def test_run_instances_parameters():
    user_data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    args = parse("RunInstances", ImageId="ami-tiny", InstanceType="m1.tiny", MinCount="1", MaxCount="3",
                 KeyName="mykey", UserData=user_data, ClientToken="tok", **{"SecurityGroup.1": "default",
                                                                           "Placement.AvailabilityZone": "nova"})
    assert dict(args.values) == {"image_id": "ami-tiny", "instance_type": "m1.tiny", "min_count": 1, "max_count": 3,
                                 "key_name": "mykey", "user_data": user_data, "client_token": "tok"}
    assert parse("RunInstances", ImageId="ami-tiny", MinCount="1", MaxCount="1")["instance_type"] == "m1.small"


@pytest.mark.parametrize("params, code, fragment", [
    ({"MinCount": "1", "MaxCount": "1"}, "MissingParameter", "ImageId"),
    ({"ImageId": "ami-tiny", "MaxCount": "1"}, "MissingParameter", "MinCount"),
    ({"ImageId": "nope", "MinCount": "1", "MaxCount": "1"}, "InvalidAMIID.NotFound", "nope"),
    ({"ImageId": "ami-tiny", "InstanceType": "m9.huge", "MinCount": "1", "MaxCount": "1"}, "InvalidParameterValue",
     "m9.huge"),
    ({"ImageId": "ami-tiny", "MinCount": "3", "MaxCount": "2"}, "InvalidParameterValue", "greater than MaxCount"),
    ({"ImageId": "ami-tiny", "MinCount": "0", "MaxCount": "2"}, "InvalidParameterValue", "positive integer"),
    ({"ImageId": "ami-tiny", "MinCount": "-1", "MaxCount": "2"}, "InvalidParameterValue", "positive integer"),
    ({"ImageId": "ami-tiny", "MinCount": "1.0", "MaxCount": "2"}, "InvalidParameterValue", "positive integer"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "99999999999"}, "InvalidParameterValue", "positive integer"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": str(MAX_COUNT_PER_REQUEST + 1)}, "InvalidParameterValue",
     "over the limit"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "UserData": "not base64!"}, "InvalidParameterValue",
     "base64"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1",
      "UserData": base64.b64encode(b"x" * (16 * 1024 + 1)).decode()}, "InvalidParameterValue", "over the limit"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "UserData": "A" * 100_000}, "InvalidParameterValue",
     "over the limit"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "KeyName": "bad\x00name"}, "InvalidParameterValue",
     "KeyName"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "Placement.AvailabilityZone": "mars"},
     "InvalidParameterValue", "mars"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "SecurityGroup.1": "web"}, "InvalidParameterValue",
     "default"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "Bogus": "1"}, "UnknownParameter", "Bogus"),
    ({"ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1", "DryRun": "maybe"}, "InvalidParameterValue", "DryRun"),
])
def test_run_instances_bad_parameters(params, code, fragment):
    with pytest.raises(NovaError) as caught:
        parse("RunInstances", **params)
    assert caught.value.code == code
    assert fragment in str(caught.value)


def test_user_data_of_exactly_16_kib_is_accepted():
    data = base64.b64encode(b"x" * 16 * 1024).decode()
    assert parse("RunInstances", ImageId="ami-tiny", MinCount="1", MaxCount="1", UserData=data)["user_data"] == data


@pytest.mark.parametrize("action, params, code", [
    ("TerminateInstances", {}, "MissingParameter"),
    ("TerminateInstances", {"InstanceId.1": "i-ok", "InstanceId.2": "instance:x"}, "InvalidInstanceID.Malformed"),
    ("TerminateInstances", {"InstanceId.1": "i-a:b"}, "InvalidInstanceID.Malformed"),
    ("DescribeInstances", {"Filter.1.Name": "x", "Filter.1.Value.1": "y"}, "UnknownParameter"),
    ("DescribeInstances", {"InstanceId.0": "i-a"}, "UnknownParameter"),
    ("AssociateAddress", {"PublicIp": "1.2.3", "InstanceId": "i-a"}, "InvalidAddress.Malformed"),
    ("AssociateAddress", {"PublicIp": "1.2.3.4"}, "MissingParameter"),
    ("ReleaseAddress", {"PublicIp": "::1"}, "InvalidAddress.Malformed"),
    ("DescribeAddresses", {"PublicIp.1": "x"}, "InvalidAddress.Malformed"),
    ("CreateKeyPair", {}, "MissingParameter"),
    ("CreateKeyPair", {"KeyName": "k", "KeyType": "dsa"}, "InvalidParameterValue"),
    ("CreateKeyPair", {"KeyName": "k", "KeyFormat": "ppk"}, "InvalidParameterValue"),
    ("CreateKeyPair", {"KeyName": "x" * 256}, "InvalidParameterValue"),
    ("DescribeAvailabilityZones", {"ZoneName.1": "mars"}, "InvalidParameterValue"),
    ("AllocateAddress", {"Domain": "vpc"}, "InvalidParameterValue"),
    ("GetConsoleOutput", {}, "MissingParameter"),
    ("GetConsoleOutput", {"InstanceId": "i-a", "InstanceId.1": "i-b"}, "InvalidParameterValue"),
    ("GetConsoleOutput", {"InstanceId.1": "i-a", "InstanceId.2": "i-b"}, "InvalidParameterValue"),
    ("GetConsoleOutput", {"InstanceId.1": "nope"}, "InvalidInstanceID.Malformed"),
    ("NoSuchAction", {}, "InvalidAction"),
])
def test_other_bad_parameters(action, params, code):
    with pytest.raises(NovaError) as caught:
        parse(action, **params)
    assert caught.value.code == code


def test_a_parameter_given_twice_is_refused():
    request = sign_v4({}, body=b"Action=DescribeInstances&Action=RunInstances")
    response, _ = drive(make_api(), request)
    assert (response.status, error_of(response)[0]) == (400, "InvalidParameterValue")
    assert "more than once" in error_of(response)[1]


def test_a_body_that_is_not_a_form_is_refused():
    request = sign_v4({}, body=b'{"Action": "DescribeInstances"}')
    request = HttpRequest("POST", PATH, "", {**request.headers, "content-type": "application/json"}, request.body)
    response, _ = drive(make_api(), request)
    assert (response.status, error_of(response)[0]) == (400, "InvalidParameterValue")


# ---------------------------------------------------------------------------
# XML and status


def test_response_xml_has_the_2010_namespace_request_id_and_items():
    body = render_response("DescribeThings", {
        "thingSet": [{"name": "a & <b>", "n": 1, "ok": True, "skip": None}, {"name": "bad\x00char"}],
        "empty": [], "blank": "",
    }, "req-9")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeThingsResponse '
                           b'xmlns="http://ec2.amazonaws.com/doc/2010-08-31/"><requestId>req-9</requestId>')
    root = ET.fromstring(body)
    assert root.tag == f"{NS}DescribeThingsResponse"
    items = root.findall(f"{NS}thingSet/{NS}item")
    assert [i.findtext(f"{NS}name") for i in items] == ["a & <b>", "bad\ufffdchar"]
    assert items[0].findtext(f"{NS}ok") == "true" and items[0].find(f"{NS}skip") is None
    assert root.find(f"{NS}empty") is not None and list(root.find(f"{NS}empty")) == []


def test_error_xml_is_the_ec2_error_document():
    assert render_error("InvalidParameterValue", "MinCount < 'x' & more", "req-3") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>InvalidParameterValue</Code>'
        b"<Message>MinCount &lt; 'x' &amp; more</Message></Error></Errors><RequestID>req-3</RequestID></Response>"
    )


@pytest.mark.parametrize("code, status", [
    ("InvalidParameterValue", 400), ("MissingParameter", 400), ("InvalidInstanceID.NotFound", 400),
    ("InstanceLimitExceeded", 400), ("InsufficientAddressCapacity", 400), ("AuthFailure", 401),
    ("UnauthorizedOperation", 403), ("DryRunOperation", 412), ("ServiceUnavailable", 503), ("RequestTimeout", 503),
    ("InternalError", 500),
])
def test_http_status_of_each_code(code, status):
    assert http_status(code) == status


def test_unauthorized_action_is_403_and_hides_parameter_errors():
    api = make_api(denied={("bob", "AllocateAddress")})
    response, effects = drive(api, sign_v4({"Action": "AllocateAddress", "Domain": "vpc"}, secret="bob-secret",
                                           access="AKBOB:proj1"))
    assert (response.status, error_of(response)[0]) == (403, "UnauthorizedOperation")
    assert writes(effects) == []


def test_unauthenticated_bad_input_gets_auth_failure_not_a_parameter_error():
    response, _effects = drive(make_api(), sign_v4({"Action": "RunInstances", "MinCount": "9", "MaxCount": "1"},
                                                  secret="wrong"))
    assert error_of(response)[0] == "AuthFailure"


def test_unknown_action_is_invalid_action_before_anything_else():
    response, effects = drive(make_api(), sign_v4({"Action": "DeleteEverything"}, secret="wrong"))
    assert (response.status, error_of(response)[0]) == (400, "InvalidAction")
    assert effects == []


def test_dry_run_answers_412_after_authorizing_and_creates_nothing():
    response, effects = drive(make_api(), sign_v4({"Action": "RunInstances", "ImageId": "ami-tiny", "MinCount": "1",
                                                   "MaxCount": "1", "DryRun": "true"}))
    assert (response.status, error_of(response)[0]) == (412, "DryRunOperation")
    assert writes(effects) == []


# ---------------------------------------------------------------------------
# Bad input creates nothing


RUN = {"Action": "RunInstances", "ImageId": "ami-tiny", "MinCount": "1", "MaxCount": "1"}


@pytest.mark.parametrize("params, code", [
    ({**RUN, "MinCount": "2", "MaxCount": "1"}, "InvalidParameterValue"),
    ({**RUN, "ImageId": "ami-nope"}, "InvalidAMIID.NotFound"),
    ({**RUN, "InstanceType": "m9.huge"}, "InvalidParameterValue"),
    ({**RUN, "UserData": base64.b64encode(b"x" * 20_000).decode()}, "InvalidParameterValue"),
    ({**RUN, "KeyName": "no-such-key"}, "InvalidKeyPair.NotFound"),
    ({"Action": "TerminateInstances", "InstanceId.1": "i-nothere"}, "InvalidInstanceID.NotFound"),
    ({"Action": "RebootInstances", "InstanceId.1": "i-nothere"}, "InvalidInstanceID.NotFound"),
    ({"Action": "GetConsoleOutput", "InstanceId": "i-nothere"}, "InvalidInstanceID.NotFound"),
    ({"Action": "DescribeInstances", "InstanceId.1": "i-nothere"}, "InvalidInstanceID.NotFound"),
    ({"Action": "AssociateAddress", "PublicIp": "192.0.2.1", "InstanceId": "i-nothere"}, "InvalidAddress.NotFound"),
    ({"Action": "ReleaseAddress", "PublicIp": "192.0.2.1"}, "InvalidAddress.NotFound"),
    ({"Action": "DisassociateAddress", "PublicIp": "192.0.2.1"}, "InvalidAddress.NotFound"),
    ({"Action": "DescribeKeyPairs", "KeyName.1": "nope"}, "InvalidKeyPair.NotFound"),
    ({"Action": "DescribeImages", "ImageId.1": "ami-nope"}, "InvalidAMIID.NotFound"),
])
def test_bad_input_yields_no_write_and_no_message(params, code):
    """Only reads happen (the clock, the directory, the records looked up)."""
    response, effects = drive(make_api(), sign_v4(params))
    assert (response.status, error_of(response)[0]) == (400, code), response.body
    assert writes(effects) == []
    assert not any(isinstance(e, (Cast, Call, Transaction)) for e in effects)


def test_associate_with_someone_elses_instance_sends_no_message():
    world = World({keys.floatingip("192.0.2.1"): {"address": "192.0.2.1", "host": "net1", "project_id": "proj1",
                                                   "instance_id": "", "fixed_ip": ""},
                   keys.instance("i-other"): {"id": "i-other", "project_id": "proj2", "state": "running"}})
    response, effects = drive(make_api(), sign_v4({"Action": "AssociateAddress", "PublicIp": "192.0.2.1",
                                                   "InstanceId": "i-other"}), world)
    assert error_of(response)[0] == "InvalidInstanceID.NotFound"
    assert writes(effects) == []


def test_over_quota_is_instance_limit_exceeded_and_leaves_usage_as_it_was():
    world = World()
    response, effects = drive(make_api(), sign_v4({**RUN, "MinCount": "4", "MaxCount": "4"}), world)
    assert (response.status, error_of(response)[0]) == (400, "InstanceLimitExceeded")
    assert not any(isinstance(e, (Cast, Call)) for e in effects)
    assert world.data.get(keys.INSTANCES, set()) == set()
    assert world.data[keys.project_usage("proj1")] == {"instances": "0", "cores": "0"}
    assert world.data[keys.RESERVATIONS] == {}


# ---------------------------------------------------------------------------
# Actions end to end over the in-memory store


def test_run_describe_terminate_over_the_store():
    world = World(calls={"allocate_fixed_ip": {"address": "10.0.0.2", "network_id": "flat", "bridge": "br100"}})
    api = make_api()
    run, effects = drive(api, sign_v4({**RUN, "MaxCount": "2", "InstanceType": "m1.tiny",
                                       "UserData": base64.b64encode(b"hello").decode()}), world)
    assert run.status == 200, run.body
    root = xml(run)
    items = root.findall(f"{NS}instancesSet/{NS}item")
    assert len(items) == 2
    assert root.findtext(f"{NS}ownerId") == "proj1"
    assert {i.findtext(f"{NS}instanceState/{NS}name") for i in items} == {"pending"}
    assert [i.findtext(f"{NS}amiLaunchIndex") for i in items] == ["0", "1"]
    ids = [i.findtext(f"{NS}instanceId") for i in items]
    casts = [(c.topic, c.method, dict(c.args)) for c in effects if isinstance(c, Cast)]
    assert casts == [("compute", "run_instance", {"instance_id": i}) for i in ids]
    assert world.data[keys.instance(ids[0])]["user_data"] == base64.b64encode(b"hello").decode()

    described, _ = drive(api, sign_v4({"Action": "DescribeInstances"}), world)
    reservations = xml(described).findall(f"{NS}reservationSet/{NS}item")
    assert len(reservations) == 1
    assert sorted(i.findtext(f"{NS}instanceId") for i in reservations[0].iter(f"{NS}item")
                  if i.find(f"{NS}instanceId") is not None) == sorted(ids)

    gone, _ = drive(api, sign_v4({"Action": "TerminateInstances", "InstanceId.1": ids[0]}), world)
    item = xml(gone).find(f"{NS}instancesSet/{NS}item")
    assert item.findtext(f"{NS}previousState/{NS}name") == "pending"
    assert item.findtext(f"{NS}currentState/{NS}name") in ("shutting-down", "terminated")


def test_describe_instances_gives_the_state_reason_of_a_failed_instance():
    """A failed instance carries stateReason (code and message) as EC2's does; a healthy one none."""
    world = World(calls={"allocate_fixed_ip": {"address": "10.0.0.2", "network_id": "flat", "bridge": "br100"}})
    api = make_api()
    run, _ = drive(api, sign_v4({**RUN, "MaxCount": "2", "InstanceType": "m1.tiny"}), world)
    failed, healthy = (i.findtext(f"{NS}instanceId") for i in xml(run).findall(f"{NS}instancesSet/{NS}item"))
    world.data[keys.instance(failed)].update(state="error", error="no valid host: all live hosts are full or down")

    described, _ = drive(api, sign_v4({"Action": "DescribeInstances"}), world)
    items = {i.findtext(f"{NS}instanceId"): i for i in xml(described).iter(f"{NS}item")
             if i.find(f"{NS}instanceId") is not None}
    assert items[failed].findtext(f"{NS}stateReason/{NS}code") == "Server.InsufficientInstanceCapacity"
    assert items[failed].findtext(f"{NS}stateReason/{NS}message").startswith("no valid host")
    assert items[healthy].find(f"{NS}stateReason") is None


def test_key_pairs_create_describe_delete():
    world, api = World(), make_api()
    created, effects = drive(api, sign_v4({"Action": "CreateKeyPair", "KeyName": "my key"}), world)
    assert created.status == 200, created.body
    root = xml(created)
    assert root.findtext(f"{NS}keyMaterial").startswith("-----BEGIN RSA PRIVATE KEY-----")
    expected = hashlib.md5(b"public-blob").hexdigest()
    assert root.findtext(f"{NS}keyFingerprint") == ":".join(expected[i:i + 2] for i in range(0, 32, 2))
    assert keypairs.GenerateKeyPair("rsa", "alice@novalab") in effects
    stored = json.loads(world.data[keypairs.user_keypairs("alice")]["my key"])
    assert "private" not in json.dumps(stored).lower()

    again, effects = drive(api, sign_v4({"Action": "CreateKeyPair", "KeyName": "my key"}), world)
    assert (again.status, error_of(again)[0]) == (400, "InvalidKeyPair.Duplicate")
    assert not any(isinstance(e, keypairs.GenerateKeyPair) for e in effects)

    listed, _ = drive(api, sign_v4({"Action": "DescribeKeyPairs"}), world)
    assert [i.findtext(f"{NS}keyName") for i in xml(listed).findall(f"{NS}keySet/{NS}item")] == ["my key"]
    bobs, _ = drive(api, sign_v4({"Action": "DescribeKeyPairs"}, secret="bob-secret", access="AKBOB:proj1"), world)
    assert xml(bobs).findall(f"{NS}keySet/{NS}item") == []  # per user

    for _ in range(2):  # deleting twice is fine, as in EC2
        deleted, _ = drive(api, sign_v4({"Action": "DeleteKeyPair", "KeyName": "my key"}), world)
        assert xml(deleted).findtext(f"{NS}return") == "true"
    assert keypairs.user_keypairs("alice") not in world.data  # Redis has no empty hashes


def test_allocate_address_over_quota_is_address_limit_exceeded():
    world = World({keys.FLOATING_HOSTS: {"net1"}},
                  calls={"allocate_floating_ip": RemoteError("QuotaExceeded", "project proj1 may hold 2")})
    response, _ = drive(make_api(), sign_v4({"Action": "AllocateAddress"}), world)
    assert (response.status, error_of(response)[0]) == (400, "AddressLimitExceeded")


def test_allocate_and_describe_addresses():
    world = World({keys.FLOATING_HOSTS: {"net1"},
                   keys.project_floatingips("proj1"): {"192.0.2.7"},
                   keys.floatingip("192.0.2.7"): {"address": "192.0.2.7", "host": "net1", "project_id": "proj1",
                                                  "instance_id": "i-abc", "fixed_ip": "10.0.0.2"}},
                  calls={"allocate_floating_ip": "192.0.2.9"})
    allocated, _ = drive(make_api(), sign_v4({"Action": "AllocateAddress"}), world)
    assert xml(allocated).findtext(f"{NS}publicIp") == "192.0.2.9"
    described, _ = drive(make_api(), sign_v4({"Action": "DescribeAddresses", "PublicIp.1": "192.0.2.7"}), world)
    item = xml(described).find(f"{NS}addressesSet/{NS}item")
    assert (item.findtext(f"{NS}publicIp"), item.findtext(f"{NS}instanceId")) == ("192.0.2.7", "i-abc")


RUNNING = {"id": "i-abc", "project_id": "proj1", "state": "running", "host": "h1", "fixed_ip": "10.0.0.2",
           "instance_type": "m1.tiny", "image_id": "ami-tiny"}


@pytest.mark.parametrize("name", ["InstanceId", "InstanceId.1"])  # boto3 and the CLI; boto 2
def test_console_output_comes_from_the_compute_host_base64(name):
    world = World({keys.instance("i-abc"): dict(RUNNING)}, calls={"get_console_output": "boot ok\n"})
    response, effects = drive(make_api(), sign_v4({"Action": "GetConsoleOutput", name: "i-abc"}), world)
    root = xml(response)
    assert base64.b64decode(root.findtext(f"{NS}output")) == b"boot ok\n"
    call = next(e for e in effects if isinstance(e, Call))
    assert (call.topic, call.method, dict(call.args)) == ("compute.h1", "get_console_output", {"instance_id": "i-abc"})


def test_console_output_from_a_compute_without_the_method_is_the_fixed_text():
    world = World({keys.instance("i-abc"): dict(RUNNING)},
                  calls={"get_console_output": RemoteError("PoisonMessage", "unknown method")})
    response, _ = drive(make_api(), sign_v4({"Action": "GetConsoleOutput", "InstanceId": "i-abc"}), world)
    text = base64.b64decode(xml(response).findtext(f"{NS}output")).decode()
    assert "i-abc" in text and "h1" in text


def test_a_workflow_error_is_answered_not_raised():
    """QuotaExceeded raised deep in a workflow becomes the error document."""
    api = make_api()

    def boom(context):
        raise QuotaExceeded("no")
        yield

    api.cloud.allocate_address = boom
    response, _ = drive(api, sign_v4({"Action": "AllocateAddress"}))
    assert (response.status, error_of(response)[0]) == (400, "AddressLimitExceeded")


def test_every_action_has_a_parser_and_a_handler():
    api = make_api()
    assert set(api._handlers) == set(ACTIONS)
    assert len(ACTIONS) == 18


def test_store_effects_only_use_validated_ids():
    """A malformed id never reaches a store key (no key injection)."""
    response, effects = drive(make_api(), sign_v4({"Action": "DescribeInstances", "InstanceId.1": "x}:*"}))
    assert error_of(response)[0] == "InvalidInstanceID.Malformed"
    assert not any(isinstance(e, StoreCommand) for e in effects)


# ---------------------------------------------------------------------------
# In-process requests (common.ec2.inprocess)


def test_in_process_signed_request_is_accepted_and_is_what_the_client_sends():
    """signed_request passes the full signature check, and Ec2Client sends exactly it."""
    from real.ec2_client import Ec2Client

    request = signed_request("DescribeAvailabilityZones", {}, ACCESS, SECRET, NOW, HOST, path=PATH)
    response, _ = drive(make_api(), request)
    assert response.status == 200, response.body
    client = Ec2Client(f"http://{HOST}{PATH}", ACCESS, SECRET, clock=lambda: NOW)
    assert client.signed_request("DescribeAvailabilityZones", {}) == request


def test_in_process_signed_request_with_a_wrong_secret_is_refused():
    """The in-process signed path still verifies: a wrong secret is AuthFailure."""
    response, _ = drive(make_api(), signed_request("DescribeInstances", {}, ACCESS, "wrong", NOW, HOST))
    assert (response.status, response.code) == (401, "AuthFailure")


def test_trusted_request_skips_the_signature_but_asks_the_directory():
    """A trusted request needs no signature or time, yet the directory lookup runs."""
    response, effects = drive(make_api(), trusted_request("DescribeAvailabilityZones", {}, ACCESS))
    assert response.status == 200, response.body
    assert response.user == "alice"
    assert any(isinstance(e, LdapSearch) and "accessKey=AKALICE" in e.filter for e in effects)


@pytest.mark.parametrize("access, denied, status, code", [
    ("AKNOBODY:proj1", (), 401, "AuthFailure"),
    ("AKALICE:other", (), 401, "AuthFailure"),
    (ACCESS, (("alice", "AllocateAddress"),), 403, "UnauthorizedOperation"),
])
def test_trusted_request_is_still_authenticated_and_authorized(access, denied, status, code):
    """An unknown key, a foreign project or a missing role is refused as for a signed request."""
    response, _ = drive(make_api(denied=denied), trusted_request("AllocateAddress", {}, access))
    assert (response.status, response.code) == (status, code)


@pytest.mark.parametrize("request_", [
    HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded",
                                   "trusted-access-key": ACCESS}, b"Action=DescribeInstances"),
    HttpRequest("POST", PATH, "", {"host": HOST, "content-type": "application/x-www-form-urlencoded"},
                urlencode({"Action": "DescribeInstances", "trusted_access_key": ACCESS}).encode()),
], ids=["header", "param"])
def test_trust_cannot_be_claimed_in_a_header_or_parameter(request_):
    """Only the HttpRequest field trusts: a header or parameter of that name is unsigned."""
    response, _ = drive(make_api(), request_)
    assert (response.status, response.code) == (401, "AuthFailure")
