"""The API path's fast paths give exactly what the plain code gave.

The EC2 renderer, the form encoder, the parameter decoder, the v4 date, key and HMAC,
the LDAP escapes and the workload's reading of answers each skip work in the usual
case (nothing to escape, nothing to decode, a key already derived, one namespace). Each is compared here with the plain version it
replaced (kept below as the reference) on representative and random inputs.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import random
import re
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, urlencode
from xml.etree import ElementTree

import pytest

from common import ldap_escaping, signing
from common.ec2 import request
from common.ec2.inprocess import form_body
from common.ec2.render import iso8601, render_error, render_response
from common.workload import ApiAnswer, Reply, outcome, read

# -- the references: the plain code the fast paths replaced -----------------------------

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _reference_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _XML_INVALID.sub("\ufffd", str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _reference_element(name: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        inner = "".join(_reference_element(k, v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        inner = "".join(_reference_element("item", v) for v in value)
    else:
        inner = _reference_text(value)
    return f"<{name}>{inner}</{name}>" if inner else f"<{name}/>"


def reference_render(action: str, body, request_id: str) -> bytes:
    inner = _reference_element("requestId", request_id) + "".join(_reference_element(k, v) for k, v in body.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{action}Response xmlns="http://ec2.amazonaws.com/doc/2010-08-31/">{inner}</{action}Response>').encode()


def reference_iso8601(seconds):
    if seconds in (None, ""):
        return None
    moment = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def reference_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def reference_escape_dn_value(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch == "\x00":
            out.append("\\00")
        elif ch in '"+,;<>\\=' or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


# -- the EC2 XML ---------------------------------------------------------------------------


def _instance(i: int) -> dict:
    return {
        "instanceId": f"i-{i:08x}", "imageId": "ami-tiny", "instanceState": {"code": 16, "name": "running"},
        "privateDnsName": "10.0.0.5", "dnsName": "10.0.0.5", "reason": "", "keyName": "", "amiLaunchIndex": i,
        "productCodes": [], "instanceType": "m1.small", "launchTime": iso8601(1234.5678 + i),
        "placement": {"availabilityZone": "nova"}, "monitoring": {"state": "disabled"},
        "privateIpAddress": "10.0.0.5", "ipAddress": None,
        "stateReason": {"code": "Server.InternalError", "message": "no valid host <&> \x00 \ud800 é 𝄞"},
    }


REPRESENTATIVE: list[tuple[str, dict]] = [
    ("RunInstances", {"reservationId": "r-1", "ownerId": "alpha", "groupSet": [{"groupId": "default"}],
                      "instancesSet": [_instance(0), _instance(1)]}),
    ("TerminateInstances", {"instancesSet": [{"instanceId": "i-1", "currentState": {"code": 32, "name": "x"},
                                              "previousState": {"code": 16, "name": "running"}}]}),
    ("RebootInstances", {"return": True}),
    ("DescribeThings", {"yes": True, "no": False, "zero": 0, "float": 2.5, "empty": "", "none": None,
                        "list": [], "tuple": ("a", 1, None, [], {}), "nested": OrderedDict(b=[{"c": "d"}]),
                        "proxy": MappingProxyType({"e": "f & g"}), "bytes": b"raw"}),
    ("AllocateAddress", {"publicIp": "192.168.0.1", "domain": "standard"}),
]


class _StrSubclass(str):
    pass


class _IntSubclass(int):
    pass


@pytest.mark.parametrize(("action", "body"), REPRESENTATIVE, ids=[a for a, _ in REPRESENTATIVE])
def test_render_response_is_byte_identical_to_the_reference(action, body):
    assert render_response(action, body, "req-1") == reference_render(action, body, "req-1")


def test_render_response_matches_the_reference_on_random_bodies():
    rng = random.Random(2010)
    leaves = ["", "plain", "a&b", "<x>", "\x01ctl", "\ud800", "é", 0, -3, 7, True, False, None, 1.5,
              _StrSubclass("sub<"), _IntSubclass(4)]

    def value(depth: int):
        roll = rng.random()
        if depth > 2 or roll < 0.5:
            return rng.choice(leaves)
        if roll < 0.75:
            return {f"k{i}": value(depth + 1) for i in range(rng.randrange(0, 4))}
        return [value(depth + 1) for _ in range(rng.randrange(0, 4))]

    for _ in range(2000):
        body = {f"f{i}": value(0) for i in range(rng.randrange(0, 5))}
        assert render_response("Act", body, "req-2") == reference_render("Act", body, "req-2")


def test_iso8601_matches_strftime():
    rng = random.Random(1)
    for seconds in [0, 0.0005, 0.9995, 1e9 + 0.123456, "1700000000.25", None, "", *(rng.uniform(0, 4e9)
                                                                                    for _ in range(3000))]:
        assert iso8601(seconds) == reference_iso8601(seconds)


# -- signing ------------------------------------------------------------------------------


def test_amz_date_matches_strftime():
    rng = random.Random(2)
    for now in [0.0, 0.9999996, 59.5, 1e9, *(rng.uniform(0, 4e9) for _ in range(3000))]:
        expected = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(signing.AMZ_DATE_FORMAT)
        assert signing.amz_date(now) == expected


def test_signing_keys_are_cached_and_bounded():
    for i in range(signing.MAX_CACHED_KEYS + 10):
        secret = f"secret-{i}"
        assert signing.signing_key(secret, "20100831", "nova", "ec2") == reference_signing_key(
            secret, "20100831", "nova", "ec2")
        assert len(signing._signing_keys) <= signing.MAX_CACHED_KEYS
    # A cached key is the same key.
    assert signing.signing_key("secret-1", "20100831", "nova", "ec2") == reference_signing_key(
        "secret-1", "20100831", "nova", "ec2")


def test_rfc3986_and_canonical_path_match_quote():
    rng = random.Random(3)
    alphabet = "aZ09-_.~/% +:é\x00?&="
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6)))
        assert signing.rfc3986(text) == quote(text, safe="-_.~")
        assert signing.canonical_path(text, "ec2") == quote(text or "/", safe="/~")


# -- the form body and its parameters -----------------------------------------------------


def test_form_body_matches_urlencode():
    rng = random.Random(4)
    alphabet = "aZ09-_.~/% +:é?&=\n"
    for _ in range(3000):
        params = {"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5))):
                  rng.choice(["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5))), 3, 2.5, None])
                  for _ in range(rng.randrange(0, 4))}
        form = {"Action": "RunInstances", "Version": "2010-08-31", **{k: str(v) for k, v in params.items()}}
        assert form_body("RunInstances", params) == urlencode(form).encode("ascii")


def _reference_pairs(text: str):
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                         max_num_fields=request.MAX_PARAMS)
    except (UnicodeDecodeError, ValueError):
        return "refused"


def _pairs(text: str):
    try:
        return request._decode_pairs(text, "form body")
    except request.InvalidParameterValue:
        return "refused"


def test_parameters_are_decoded_as_parse_qsl_decodes_them():
    rng = random.Random(5)
    alphabet = "ab=&%+2Fé"
    texts = ["", "&", "a", "a=", "=b", "a=b=c", "Action=RunInstances&Version=2010-08-31&MinCount=1",
             "&".join(["a=b"] * request.MAX_PARAMS), "&".join(["a=b"] * (request.MAX_PARAMS + 1))]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))) for _ in range(5000)]
    for text in texts:
        assert _pairs(text) == _reference_pairs(text), text


# -- LDAP escaping ------------------------------------------------------------------------


def test_ldap_escapes_match_the_plain_loops():
    rng = random.Random(6)
    alphabet = 'ab#  ,=+"\\;<>*()\x00é'
    for _ in range(20000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 7)))
        assert ldap_escaping.escape_dn_value(value) == reference_escape_dn_value(value)
        assert ldap_escaping.split_first_rdn(value) == ldap_escaping._split_escaped_rdn(value)
        assert ldap_escaping.escape_filter_value(value) == "".join(
            {"\\": "\\5c", "*": "\\2a", "(": "\\28", ")": "\\29", "\x00": "\\00"}.get(ch, ch) for ch in value)
        escaped = ldap_escaping.escape_dn_value(value)
        assert ldap_escaping.unescape_dn_value(escaped) == value


def test_v4_signatures_are_the_hmac_modules():
    rng = random.Random(7)
    for _ in range(300):
        secret = "".join(rng.choice("abcXYZ019/+") for _ in range(rng.randrange(1, 90)))
        to_sign = "".join(rng.choice("ab\n:é") for _ in range(rng.randrange(0, 300)))
        key = reference_signing_key(secret, "20100831", "nova", "ec2")
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        assert signing.v4_signature(secret, "20100831", "nova", "ec2", to_sign) == expected
    for length in (0, 1, 63, 64, 65, 200):  # keys around the block size
        key = bytes(rng.randrange(256) for _ in range(length))
        assert signing._Sha256Mac(key).digest(b"message") == hmac.new(key, b"message", hashlib.sha256).digest()


# -- the workload's reading of answers ----------------------------------------------------


def _reference_texts(body: bytes, name: str):
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    return [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == name]


def _reference_reply(answer: ApiAnswer) -> Reply:
    """The workload's reading as it was: one parse per question asked."""
    try:
        root = ElementTree.fromstring(answer.body)
    except ElementTree.ParseError:
        root = None
    if answer.failure:
        code = answer.failure
    elif root is None:
        code = "InvalidResponse"
    elif answer.status != 200 or root.tag.rsplit("}", 1)[-1] == "Response":
        codes = _reference_texts(answer.body, "Code")
        code = codes[0] if codes else "Unknown"
    else:
        code = ""
    messages = _reference_texts(answer.body, "Message") or []
    ips = _reference_texts(answer.body, "publicIp") or []
    return Reply(code, messages[0] if messages else answer.failure,
                 tuple(t for t in _reference_texts(answer.body, "instanceId") or [] if t), ips[0] if ips else "")


ANSWERS = [
    ApiAnswer(200, render_response("RunInstances", REPRESENTATIVE[0][1], "req-1")),
    ApiAnswer(200, render_response("AllocateAddress", {"publicIp": "10.1.2.3"}, "req-2")),
    ApiAnswer(400, render_error("InvalidParameterValue", "bad <value> & more", "req-3")),
    ApiAnswer(200, render_error("Throttled", "a 200 that is an error", "req-4")),
    ApiAnswer(503, b"<html>Service Unavailable</html>"),
    ApiAnswer(200, b"not xml"),
    ApiAnswer(0, b"", "RequestTimeout"),
    ApiAnswer(200, b'<R xmlns="urn:a"><instanceId>i-1</instanceId><x xmlns="urn:b"><instanceId>i-2</instanceId></x>'
                   b"<instanceId/></R>"),
    ApiAnswer(200, b'<p:R xmlns:p="urn:a"><instanceId>i-1</instanceId><p:instanceId>i-2</p:instanceId></p:R>'),
    ApiAnswer(200, b"<R><Message>xmlns in text</Message><publicIp></publicIp><publicIp>1.1.1.1</publicIp></R>"),
    ApiAnswer(400, b'<Response xmlns="urn:e"><Errors><Error><Message>m</Message></Error></Errors></Response>'),
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_one_reading_of_an_answer_is_what_the_separate_readings_gave(answer):
    assert read(answer) == _reference_reply(answer)
    assert outcome(answer) == _reference_reply(answer).outcome
