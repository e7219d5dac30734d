"""The Swift (Cloud Files) API of the object store, beside S3 on the same port and disk.

A Swift container *is* the S3 bucket of the same name and the same project, and its
objects are that bucket's: an object uploaded with ``swift upload`` downloads with
``aws s3 cp`` and the other way round (bytes, content type and user metadata;
``X-Object-Meta-Color`` is S3's ``x-amz-meta-color``). python-swiftclient's ``swift``
command works unmodified with ``-A http://HOST:3333/auth/v1.0 -U <project>:<user> -K
<secret key>`` (``ST_AUTH``/``ST_USER``/``ST_KEY``). Authentication is ``swift_auth``,
the objects' requests ``swift_objects``, large objects ``swift_large``.

Which API a request is for: paths under ``/v1/`` are Swift's (``v1`` names no bucket);
``/auth/v1.0`` with ``X-Auth-User`` (or ``X-Storage-User``) and ``/info``
are Swift's unless the request carries an S3 signature; everything else is S3's.

*Features*

- Auth v1.0 (``GET /auth/v1.0``) and tokens: ``swift_auth``.
- ``GET /info``: the capabilities, with ``slo`` and ``dlo`` (so ``swift upload
  --segment-size`` makes static large objects) and the limits below.
- Accounts ``/v1/AUTH_<project>``: HEAD (``X-Account-Container-Count``,
  ``-Object-Count``, ``-Bytes-Used``) and GET (the project's containers; ``format`` =
  plain, ``json`` or ``xml``, or by ``Accept``; ``limit`` up to 10,000, ``marker``,
  ``end_marker``, ``prefix``; an empty plain listing is 204).
- Containers: PUT (201; 202 when the project has it already), POST, HEAD (counts and
  ``X-Container-Meta-*``), GET (objects with ``prefix``, ``delimiter`` and ``subdir``
  entries, ``marker``, ``end_marker``, ``limit``; the same formats), DELETE (409 while
  it holds objects). ``X-Container-Meta-*`` on PUT and POST, removed by an empty value
  or ``X-Remove-Container-Meta-*``.
- Objects (``swift_objects``): PUT (``Content-Length`` or chunked; ``ETag`` checked
  against the body's MD5, 422 and nothing stored when it differs; ``If-None-Match:
  *``), GET and HEAD (``Range`` and the conditional headers, S3's code), DELETE, POST
  (replaces ``X-Object-Meta-*`` and may set ``Content-Type``), COPY (``Destination``)
  and PUT with ``X-Copy-From`` (``X-Fresh-Metadata``), ``X-Object-Meta-*``.
- Large objects (``swift_large``): static manifests (``?multipart-manifest=put``,
  ``=get``, ``DELETE ?multipart-manifest=delete`` removes the segments too) and
  dynamic ones (``X-Object-Manifest``).
- Errors are Swift's statuses (400, 401, 403, 404, 405, 409, 411, 412, 413, 416, 422,
  501, 503) with a short text body; a refused request stores nothing.
- Bodies stream to and from disk as S3's do (memory does not grow with object size).
- Metadata bounds (Swift's defaults): 90 items, names of 128 and values of 256
  characters, 4,096 bytes in all, per container or object.

*Not supported*: container names outside 1-255 characters of ``A-Za-z0-9._-`` that
start with a letter or digit, and ``v1`` (they are bucket names on disk) and container names another project has taken (the S3
namespace is global: 409); account metadata (POST on an account is 501); ACLs
(``X-Container-Read``/``-Write``), versioning, container sync, expiring objects
(``X-Delete-At``/``-After``), symlinks, bulk operations, TempURL, form posts, storage
policies (all 501 when asked for); keystone auth (v2/v3); the ``path`` and
``reverse`` listing parameters. The HTTP server's own refusals (oversized headers,
malformed requests) are answered in S3's XML by status, before any path is known.
"""

from __future__ import annotations

import http
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from real.objectstore import swift_auth, swift_large
from real.objectstore.objects import list_keys
from real.objectstore.protocol import (
    BUCKET_META,
    MAX_KEY_BYTES,
    Caller,
    S3Error,
    S3Request,
    http_date,
)
from real.objectstore.swift_objects import SwiftObjects, check_meta, meta_updates, swift_time

log = logging.getLogger("novalab.objectstore")

#: Entries in one listing page (Swift's default limit).
MAX_LISTING = 10_000

#: Swift's statuses where they differ from S3's for the same failure.
SWIFT_STATUS = {"BucketNotEmpty": 409, "BucketAlreadyExists": 409, "BadDigest": 422, "EntityTooLarge": 413, "InvalidBucketName": 400, "KeyTooLongError": 400,
                "MissingContentLength": 411, "NoSuchUpload": 404, "RequestHeaderSectionTooLarge": 400}

#: Headers asking for what this API does not do (module docstring).
UNSUPPORTED_HEADERS = ("x-container-read", "x-container-write", "x-versions-location", "x-history-location",
                       "x-container-sync-to", "x-container-sync-key", "x-delete-at", "x-delete-after",
                       "x-symlink-target", "x-storage-policy")

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def is_swift(environ) -> bool:
    """Whether a request is for the Swift API (module docstring)."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/v1/") or path == "/v1":
        return True
    query = environ.get("QUERY_STRING", "")
    if environ.get("HTTP_AUTHORIZATION") or "Signature=" in query or "X-Amz-Credential=" in query:
        return False
    if path.rstrip("/") == "/auth/v1.0":
        return bool(environ.get("HTTP_X_AUTH_USER") or environ.get("HTTP_X_STORAGE_USER"))
    return path.rstrip("/") == "/info"


class SwiftApi(SwiftObjects):
    """The Swift API over an ObjectStoreApp (``app``): its store, lookup, clock and the
    helpers it shares with S3 (ownership, bodies, commits)."""

    def __init__(self, app):
        self.app = app
        self.store = app.store
        self.tokens = swift_auth.Tokens(app.clock)

    def __call__(self, environ, start_response):
        trans = "tx" + uuid.uuid4().hex[:21]
        method = environ["REQUEST_METHOD"].upper()
        try:
            request = S3Request(environ)
            status, headers, body = self._route(request)
        except S3Error as e:
            status, headers, body = self._error(environ, e)
        except Exception:  # a bug or an I/O failure: answer, log, keep serving
            log.exception("objectstore: swift %s %s failed", method, environ.get("PATH_INFO"))
            status, headers, body = self._error(environ, S3Error("InternalError", "An internal error occurred; "
                                                                "try again."))
        headers = [*headers, ("X-Trans-Id", trans), ("X-Openstack-Request-Id", trans),
                   ("Date", http_date(self.app.clock()))]
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        if method == "HEAD":
            if hasattr(body, "close"):
                body.close()
            return []
        return [body] if isinstance(body, bytes) else body

    def _error(self, environ, e: S3Error):
        status = 401 if e.code == "Unauthorized" else SWIFT_STATUS.get(e.code, e.status)
        body = f"{http.HTTPStatus(status).phrase}: {e.message}\n".encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *e.headers]
        if environ["REQUEST_METHOD"].upper() in ("PUT", "POST", "COPY") or e.close:
            headers.append(("Connection", "close"))  # the body may be unread: never parse it as a request
        if status == 401:
            headers.append(("WWW-Authenticate", 'Swift realm="novalab"'))
        return status, headers, body

    # -- routing ---------------------------------------------------------------------

    def _route(self, request: S3Request):
        path = request.raw_path
        if not path.startswith("/v1/"):
            self.app._drain_small(request)
            if path.rstrip("/") == "/info":
                return self._info(request)
            return self._auth(request)
        try:
            account, container, obj = (unquote(p, errors="strict") for p in ([*path[4:].split("/", 2), "", ""])[:3])
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "the path is not UTF-8") from None
        token = request.headers.get("x-auth-token") or request.headers.get("x-storage-token", "")
        caller = swift_auth.caller_of(self.app.lookup, self.tokens, token)
        project = swift_auth.account_project(account, caller)
        request.caller = Caller(caller.access_key, project, caller.is_admin)
        unsupported = [h for h in UNSUPPORTED_HEADERS if h in request.headers]
        if unsupported:
            raise S3Error("NotImplemented", f"{unsupported[0]} is not supported by this store", close=True)
        method = request.method
        handlers: dict[str, Callable[..., tuple]]
        if not container:
            handlers = {"GET": self._list_containers, "HEAD": self._head_account}
            target: tuple = (project,)
        elif not obj:
            handlers = {"GET": self._list_objects, "HEAD": self._head_container, "PUT": self._put_container,
                        "POST": self._post_container, "DELETE": self._delete_container}
            target = (container,)
        else:
            handlers = {"GET": self._get_object, "HEAD": self._get_object, "PUT": self._put_object,
                        "POST": self._post_object, "DELETE": self._delete_object, "COPY": self._copy_object}
            target = (container, obj)
        handler = handlers.get(method)
        if handler is None:
            what = "account" if not container else "container" if not obj else "object"
            if (method, what) == ("POST", "account"):
                raise S3Error("NotImplemented", "account metadata is not supported by this store", close=True)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on an {what}" if what != "container"
                          else f"{method} is not allowed on a container", close=True)
        if method in ("GET", "HEAD", "DELETE", "COPY"):
            self.app._drain_small(request)
        return handler(request, *target)

    def _info(self, request: S3Request):
        info = {"swift": {"version": "novalab", "max_file_size": self.app.max_body,
                          "max_object_name_length": MAX_KEY_BYTES, "max_container_name_length": 255,
                          "container_listing_limit": MAX_LISTING, "account_listing_limit": MAX_LISTING,
                          "max_meta_count": 90, "max_meta_name_length": 128, "max_meta_value_length": 256,
                          "max_meta_overall_size": 4096},
                "slo": {"max_manifest_segments": swift_large.MAX_SEGMENTS,
                        "max_manifest_size": swift_large.MAX_MANIFEST_BODY, "min_segment_size": 1},
                "dlo": {"max_segments": swift_large.MAX_DLO_SEGMENTS},
                "tempauth": {"account_acls": False}}
        return _json(info)

    def _auth(self, request: S3Request):
        if request.raw_path.rstrip("/") != "/auth/v1.0":
            raise S3Error("NoSuchKey", "no such path: auth is GET /auth/v1.0")
        if request.method not in ("GET", "HEAD"):
            raise S3Error("MethodNotAllowed", "auth is GET /auth/v1.0")
        headers = request.headers
        user = headers.get("x-auth-user") or headers.get("x-storage-user", "")
        key = headers.get("x-auth-key") or headers.get("x-storage-pass", "")
        token, entry = swift_auth.sign_in(self.app.lookup, self.tokens, user, key)
        host = headers.get("host", "")
        if not _HOST.match(host):
            host = f"{request.environ.get('SERVER_NAME', '127.0.0.1')}:{request.environ.get('SERVER_PORT', '80')}"
        url = f"{request.environ.get('wsgi.url_scheme', 'http')}://{host}/v1/{swift_auth.ACCOUNT_PREFIX}" \
              f"{quote(entry.project, safe='')}"
        expires = max(0, int(entry.expires - self.app.clock()))
        return 200, [("X-Storage-Url", url), ("X-Auth-Token", token), ("X-Storage-Token", token),
                     ("X-Auth-Token-Expires", str(expires)), ("Content-Length", "0")], b""

    # -- accounts ----------------------------------------------------------------------

    def _containers(self, project: str) -> list[tuple[str, dict]]:
        found = []
        for name in sorted(os.listdir(self.store.root)):
            if name.startswith("."):
                continue
            try:
                info = self.store.bucket_info(name)
            except S3Error:
                continue
            if info["owner"] == project:
                found.append((name, info))
        return found

    def _usage(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) of a bucket, counted from its files (a manifest counts its own bytes)."""
        count = size = 0
        try:
            with os.scandir(self.store.bucket_dir(bucket)) as entries:
                for entry in entries:
                    if not entry.name.startswith("."):
                        try:
                            size += entry.stat().st_size
                            count += 1
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            pass
        return count, size

    def _account_headers(self, project: str, containers: list[tuple[str, dict]]) -> list[tuple[str, str]]:
        usage = [self._usage(name) for name, _ in containers]
        return [("X-Account-Container-Count", str(len(containers))),
                ("X-Account-Object-Count", str(sum(c for c, _ in usage))),
                ("X-Account-Bytes-Used", str(sum(b for _, b in usage))),
                ("X-Timestamp", "0.00000"), ("Accept-Ranges", "bytes")]

    def _head_account(self, request: S3Request, project: str):
        headers = self._account_headers(project, self._containers(project))
        return 204, [*headers, ("Content-Length", "0"), ("Content-Type", "text/plain; charset=utf-8")], b""

    def _list_containers(self, request: S3Request, project: str):
        query = request.query
        limit, marker, end, prefix = _window(query)
        containers = self._containers(project)
        page = [(name, info) for name, info in containers
                if name.startswith(prefix) and name > marker and (not end or name < end)][:limit]
        items = []
        for name, info in page:
            count, size = self._usage(name)
            items.append({"name": name, "count": count, "bytes": size,
                          "last_modified": swift_time(info.get("created", 0))})
        return _listing(request, items, "account", f"{swift_auth.ACCOUNT_PREFIX}{project}",
                        self._account_headers(project, containers))

    # -- containers --------------------------------------------------------------------

    def _container_headers(self, bucket: str, info: dict) -> list[tuple[str, str]]:
        count, size = self._usage(bucket)
        meta = [("X-Container-Meta-" + _title(k[len("x-container-meta-"):]), v)
                for k, v in sorted(info.get("swift_meta", {}).items())]
        return [("X-Container-Object-Count", str(count)), ("X-Container-Bytes-Used", str(size)),
                ("X-Timestamp", f"{info.get('created', 0):.5f}"), ("Accept-Ranges", "bytes"), *meta]

    def _head_container(self, request: S3Request, bucket: str):
        info = self.app._owned_bucket(request, bucket)
        headers = self._container_headers(bucket, info)
        return 204, [*headers, ("Content-Length", "0"), ("Content-Type", "text/plain; charset=utf-8")], b""

    def _put_container(self, request: S3Request, bucket: str):
        self.app._drain_small(request)
        updates = meta_updates(request.headers, "container")
        meta = {k: v for k, v in updates.items() if v}
        check_meta(meta)
        if self.app.make_bucket(request.caller.project, bucket, {"swift_meta": meta}):
            return 201, [("Content-Length", "0"), ("Content-Type", "text/html; charset=UTF-8")], b""
        if updates:
            self._update_container_meta(request, bucket, updates)
        return 202, [("Content-Length", "0"), ("Content-Type", "text/html; charset=UTF-8")], b""

    def _post_container(self, request: S3Request, bucket: str):
        self.app._drain_small(request)
        self._update_container_meta(request, bucket, meta_updates(request.headers, "container"))
        return 204, [("Content-Length", "0"), ("Content-Type", "text/html; charset=UTF-8")], b""

    def _update_container_meta(self, request: S3Request, bucket: str, updates: dict) -> None:
        with self.store.lock:
            info = self.app._owned_bucket(request, bucket)
            meta = {**info.get("swift_meta", {}), **updates}
            meta = {k: v for k, v in meta.items() if v}
            check_meta(meta)
            self.store.write_json(os.path.join(self.store.bucket_dir(bucket), BUCKET_META),
                                  {**info, "swift_meta": meta})

    def _delete_container(self, request: S3Request, bucket: str):
        return self.app._delete_bucket(request, bucket)

    def _list_objects(self, request: S3Request, bucket: str):
        info = self.app._owned_bucket(request, bucket)
        limit, marker, end, prefix = _window(request.query)
        delimiter = request.query.get("delimiter", "")
        entries, _ = list_keys(self.store, bucket, prefix, delimiter, marker, limit, end)
        items = []
        for key, meta in entries:
            if meta is None:
                items.append({"subdir": key})
                continue
            etag, size = meta.get("md5") or meta["etag"], meta["size"]
            if meta.get("manifest") == "slo":
                etag, size = meta["slo_etag"], meta["slo_size"]
            items.append({"name": key, "hash": etag, "bytes": size,
                          "content_type": meta.get("content_type", "application/octet-stream"),
                          "last_modified": swift_time(meta["mtime_ns"] / 1e9)})
        return _listing(request, items, "container", bucket, self._container_headers(bucket, info))


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _window(query) -> tuple[int, str, str, str]:
    """(limit, marker, end_marker, prefix) of a listing; 412 for a limit over MAX_LISTING."""
    try:
        limit = int(query.get("limit", MAX_LISTING))
    except ValueError:
        raise S3Error("InvalidArgument", "limit must be an integer") from None
    if limit < 0:
        raise S3Error("InvalidArgument", "limit must not be negative")
    if limit > MAX_LISTING:  # Swift's answer to a page larger than it serves
        raise S3Error("PreconditionFailed", f"Maximum limit is {MAX_LISTING}")
    return limit, query.get("marker", ""), query.get("end_marker", ""), query.get("prefix", "")


def _format(request: S3Request) -> str:
    wanted = request.query.get("format", "").lower()
    if not wanted:
        accept = request.headers.get("accept", "")
        wanted = "json" if "application/json" in accept else "xml" if "xml" in accept else "plain"
    if wanted not in ("plain", "json", "xml"):
        raise S3Error("InvalidArgument", f"format {wanted[:32]!r} is not plain, json or xml")
    return wanted


def _listing(request: S3Request, items: list[dict], kind: str, name: str, headers: list):
    """A listing in the asked-for format; an empty plain one is 204."""
    form = _format(request)
    if form == "json":
        body = json.dumps(items).encode()
        content_type = "application/json; charset=utf-8"
    elif form == "xml":
        entry = "container" if kind == "account" else "object"
        parts = []
        for item in items:
            if "subdir" in item:
                parts.append(f'<subdir name="{escape(item["subdir"], {chr(34): "&quot;"})}">'
                             f'<name>{escape(item["subdir"])}</name></subdir>')
            else:
                parts.append(f"<{entry}>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in item.items())
                             + f"</{entry}>")
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{kind} name="{escape(name, {chr(34): "&quot;"})}">'
                + "".join(parts) + f"</{kind}>").encode()
        content_type = "application/xml; charset=utf-8"
    else:
        if not items:
            return 204, [*headers, ("Content-Length", "0"), ("Content-Type", "text/plain; charset=utf-8")], b""
        body = "".join((item.get("name") or item["subdir"]) + "\n" for item in items).encode()
        content_type = "text/plain; charset=utf-8"
    return 200, [*headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))], body


def _json(value) -> tuple[int, list, bytes]:
    body = json.dumps(value).encode()
    return 200, [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body)))], body

