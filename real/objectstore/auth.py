"""Who an object store request comes from: credentials lookups and signatures.

The canonical forms and the signature are common.signing's (the EC2 API and the
clients use the same ones); this module adds S3's error codes, the clock-skew bound,
the ``<access>:<project>`` form and the lookups. ``sign_headers`` signs a request to
the store (real/images.py's fetches, tests).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from common import signing
from real.objectstore.protocol import AMZ_DATE, Caller, S3Error, S3Request, iso_time, parse_time

log = logging.getLogger("novalab.objectstore")

SERVICE = "s3"

Lookup = Callable[..., tuple | None]  # (access), or (access, project) when scoped

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sign_headers(method: str, url: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 payload_hash: str = signing.EMPTY_SHA256, headers: Mapping[str, str] | None = None,
                 now: float | None = None) -> dict:
    """The headers that sign a request to ``url`` (its path already percent-encoded),
    ``Host`` included: send exactly these (plus any you passed in ``headers``)."""
    parts = urlsplit(url)
    extra = {"x-amz-content-sha256": payload_hash, **{k.lower(): v for k, v in (headers or {}).items()}}
    return signing.sign_v4(method, parts.netloc, parts.path or "/", parts.query, payload_hash,
                           access_key=access_key, secret_key=secret_key, region=region, service=SERVICE,
                           now=time.time() if now is None else now, headers=extra)


def _authorization(request: S3Request) -> signing.V4Authorization:
    auth = request.headers.get("authorization", "")
    if not auth:
        raise S3Error("AccessDenied", "Anonymous access is not allowed: sign requests with AWS Signature Version 4",
                      close=True)
    try:
        return signing.parse_v4_authorization(auth, SERVICE)
    except signing.SignatureError as e:
        if e.reason == "algorithm":
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                          f"Please use {signing.V4_ALGORITHM}.", close=True) from None
        if e.reason == "signature":
            raise S3Error("SignatureDoesNotMatch", f"The request signature is malformed: {e}", close=True) from None
        raise S3Error("AuthorizationHeaderMalformed", f"The authorization header is malformed: {e}",
                      close=True) from None


def _request_time(request: S3Request, now: float, max_skew: float) -> str:
    """The request's ``x-amz-date`` (or ``Date``) as yyyymmddThhmmssZ, within ``max_skew`` of ``now``."""
    stamp = request.headers.get("x-amz-date") or request.headers.get("date", "")
    when = parse_time(stamp)
    if when is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", close=True)
    if abs(now - when) > max_skew:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the current time is "
                      "too large.", {"RequestTime": stamp, "ServerTime": iso_time(now),
                                     "MaxAllowedSkewMilliseconds": str(int(max_skew * 1000))}, close=True)
    return time.strftime(AMZ_DATE, time.gmtime(when))


def _payload_hash(request: S3Request) -> str:
    payload_hash = request.headers.get("x-amz-content-sha256")
    if not payload_hash:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256",
                      close=True)
    if payload_hash != signing.UNSIGNED_PAYLOAD and not _SHA256_HEX.fullmatch(payload_hash):
        raise S3Error("NotImplemented" if payload_hash.startswith("STREAMING-") else "InvalidArgument",
                      f"x-amz-content-sha256 {payload_hash!r} is not supported: send the hex SHA-256 of the body "
                      "or UNSIGNED-PAYLOAD (streaming aws-chunked payloads are not supported)", close=True)
    return payload_hash


def authenticate(request: S3Request, lookup: Lookup, now: float, max_skew: float) -> Caller:
    """The caller of a signed request (package docstring, "Authentication"): v4 in the
    header or the query (a pre-signed URL), or S3's v2 in either. Sets
    ``request.payload_hash`` for the body reader. Raises S3Error."""
    query = request.query
    if "X-Amz-Algorithm" in query or "X-Amz-Signature" in query:
        return _presigned_v4(request, lookup, now, max_skew)
    if "Signature" in query or "AWSAccessKeyId" in query:
        return _presigned_v2(request, lookup, now)
    if request.headers.get("authorization", "").startswith("AWS "):
        return _header_v2(request, lookup, now, max_skew)
    return _header_v4(request, lookup, now, max_skew)


def _header_v4(request: S3Request, lookup: Lookup, now: float, max_skew: float) -> Caller:
    auth = _authorization(request)
    found = _lookup(lookup, auth.access_key)
    amz_date = _request_time(request, now, max_skew)
    if auth.date != amz_date[:8]:
        raise S3Error("AuthorizationHeaderMalformed", f"Invalid credential date {auth.date!r}: it is not the date "
                      f"of the request time {amz_date}", close=True)
    payload_hash = _payload_hash(request)
    canonical, to_sign = auth.string_to_sign(request.method, request.raw_path, request.query_string,
                                             request.headers, payload_hash, amz_date)
    if not auth.matches(found[0], to_sign):
        raise _mismatch(auth.access_key, to_sign, canonical)
    request.payload_hash = payload_hash
    return _caller(auth.access_key, found)


def _presigned_v4(request: S3Request, lookup: Lookup, now: float, max_skew: float) -> Caller:
    try:
        presigned = signing.parse_v4_query(request.query, SERVICE)
    except signing.SignatureError as e:
        raise S3Error("AuthorizationQueryParametersError", f"The pre-signed URL is malformed: {e}",
                      close=True) from None
    found = _lookup(lookup, presigned.auth.access_key)
    when = parse_time(presigned.amz_date)
    if when is None or presigned.auth.date != presigned.amz_date[:8]:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Date must be yyyymmddThhmmssZ of the "
                      "credential's date", close=True)
    if when > now + max_skew:
        raise S3Error("AccessDenied", "Request is not valid yet: its X-Amz-Date is in the future", close=True)
    if now > when + presigned.expires:
        raise S3Error("AccessDenied", "Request has expired", {"X-Amz-Expires": str(presigned.expires),
                      "Expires": iso_time(when + presigned.expires), "ServerTime": iso_time(now)}, close=True)
    canonical, to_sign = presigned.string_to_sign(request.method, request.raw_path, request.query_string,
                                                  request.headers)
    if not presigned.auth.matches(found[0], to_sign):
        raise _mismatch(presigned.auth.access_key, to_sign, canonical)
    return _caller(presigned.auth.access_key, found)


def _presigned_v2(request: S3Request, lookup: Lookup, now: float) -> Caller:
    query = request.query
    missing = [name for name in ("AWSAccessKeyId", "Expires", "Signature") if not query.get(name)]
    if missing:
        raise S3Error("AccessDenied", f"Query-string authentication requires the {missing[0]} parameter",
                      close=True)
    try:
        expires = int(query["Expires"])
    except ValueError:
        raise S3Error("AccessDenied", "Expires must be seconds since the epoch", close=True) from None
    found = _lookup(lookup, query["AWSAccessKeyId"])
    if now > expires:
        raise S3Error("AccessDenied", "Request has expired", {"Expires": iso_time(expires),
                      "ServerTime": iso_time(now)}, close=True)
    if expires > now + signing.V4_MAX_EXPIRES:  # the v4 bound: a leaked URL must not work for years
        raise S3Error("AccessDenied", f"Expires is more than {signing.V4_MAX_EXPIRES} seconds ahead", close=True)
    to_sign = signing.s3_v2_string_to_sign(request.method, request.raw_path, request.query_string,
                                           request.headers, query["Expires"])
    if not signing.s3_v2_matches(found[0], to_sign, query["Signature"]):
        raise _mismatch(query["AWSAccessKeyId"], to_sign)
    return _caller(query["AWSAccessKeyId"], found)


def _header_v2(request: S3Request, lookup: Lookup, now: float, max_skew: float) -> Caller:
    access, colon, signature = request.headers["authorization"][4:].strip().rpartition(":")
    if not colon or not access:
        raise S3Error("InvalidArgument", "The Authorization header must be 'AWS <access key>:<signature>'",
                      close=True)
    found = _lookup(lookup, access)
    _request_time(request, now, max_skew)
    date = "" if "x-amz-date" in request.headers else request.headers.get("date", "")
    to_sign = signing.s3_v2_string_to_sign(request.method, request.raw_path, request.query_string,
                                           request.headers, date)
    if not signing.s3_v2_matches(found[0], to_sign, signature):
        raise _mismatch(access, to_sign)
    return _caller(access, found)


def _lookup(lookup: Lookup, access_key: str) -> tuple:
    """(secret, project the key may act for, is_admin) of ``<access>[:<project>]``."""
    access, _, project = access_key.partition(":")
    found = lookup(access, project) if getattr(lookup, "scoped", False) else lookup(access)
    if found is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
                      {"AWSAccessKeyId": access_key}, close=True)
    return found


def _mismatch(access_key: str, to_sign: str, canonical: str | None = None) -> S3Error:
    extra = {"AWSAccessKeyId": access_key, "StringToSign": to_sign}
    if canonical is not None:
        extra["CanonicalRequest"] = canonical
    return S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                   "you provided. Check your key and signing method.", extra, close=True)


def _caller(access_key: str, found: tuple) -> Caller:
    """The caller once the signature holds: the project asked for, if the key may act for it."""
    access, _, project = access_key.partition(":")
    _, own_project, is_admin = found
    project = project or own_project
    if not project:
        raise S3Error("AccessDenied", f"Access key {access!r} names no project it may act for: use "
                      "<access key>:<project>", close=True)
    if project != own_project and not is_admin:
        raise S3Error("AccessDenied", f"Access key {access!r} does not act for project {project!r}", close=True)
    return Caller(access, project, bool(is_admin))


# ---------------------------------------------------------------------------
# Credentials lookups


def dict_lookup(keys: Mapping[str, Mapping]) -> Lookup:
    """A lookup over ``{access: {"secret": ..., "project": ..., "admin": bool}}``."""
    table = {access: (entry["secret"], entry["project"], bool(entry.get("admin", False)))
             for access, entry in keys.items()}
    return table.get


class directory_lookup:
    """A scoped lookup (module docstring) over the directory: ``ldap`` performs the
    effects (real.directory.LdapDirectory), ``directory`` is a
    common.directory.Directory. The secret by access key (``user_by_access_key``), the
    project by ``Directory.authenticate`` (membership; an admin may act for any
    existing project), admins by ``isAdmin``. Every request asks the directory, so a
    revoked key or membership takes effect at once. A directory that does not answer
    gives 503 ServiceUnavailable."""

    scoped = True

    def __init__(self, ldap, directory):
        self.ldap = ldap
        self.directory = directory

    def __call__(self, access: str, project: str = ""):
        from common.errors import AuthFailure

        user = self._ask(self.directory.user_by_access_key(access), access)
        if user is None:
            return None
        try:
            answer = self._ask(self.directory.authenticate(f"{access}:{project}" if project else access), access)
        except AuthFailure:
            return user.secret_key, None, bool(user.is_admin)
        if answer is None:
            return None
        # authenticate's user: an existing directory (ldap_map) knows admins by their group.
        return user.secret_key, answer[1].name, bool(user.is_admin or answer[0].is_admin)

    def access_key_of(self, name: str) -> str | None:
        """The access key of the user named ``name`` (Swift's auth names users), or None."""
        user = self._ask(self.directory.get_user(name), name)
        return None if user is None else user.access_key

    def _ask(self, effects, asked: str):
        """Run a directory request: 503 when the directory does not answer; None when it
        refuses to look ``asked`` up (AuthFailure passes through)."""
        from common.errors import AuthFailure, DirectoryUnavailable, NovaError

        try:
            return self.ldap.run(effects)
        except DirectoryUnavailable as e:
            log.warning("objectstore: %s", e)
            raise S3Error("ServiceUnavailable", "The directory that holds the credentials is not answering; "
                          "try again later.", close=True) from None
        except AuthFailure:
            raise
        except NovaError as e:  # an access key or name the directory refuses to look up
            log.info("objectstore: lookup of %r refused: %s", asked[:64], e)
            return None


def file_lookup(path) -> Lookup:
    """A lookup over a YAML (or JSON) file in dict_lookup's form, read once."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of access key -> {{secret, project, admin}}")
    try:
        return dict_lookup(data)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: every key needs 'secret' and 'project' ({e})") from None
