"""The object requests of the Swift API (a mixin of ``swift.SwiftApi``): PUT (plain,
chunked, a static manifest, a dynamic one, a copy), GET and HEAD, POST, COPY and DELETE.

What each does is in ``swift``'s docstring; the bytes are written and read with the
S3 application's own code (``ObjectStoreApp.store_body``, ``commit``, ``open_source``,
``copy_to_tmp``; ``objects.answer_get``), so both APIs store and serve alike. User
metadata is kept as S3 keeps it (``x-amz-meta-<name>``) and served as
``X-Object-Meta-<Name>``.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import tempfile
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from real.objectstore import swift_large
from real.objectstore.objects import answer_get, no_such_key, open_plain, whole_md5
from real.objectstore.protocol import BodyReader, S3Error, S3Request, http_date

#: Swift's default bounds on the metadata of one container or object.
MAX_META_COUNT = 90
MAX_META_NAME = 128
MAX_META_VALUE = 256
MAX_META_TOTAL = 4096

S3_META = "x-amz-meta-"


def swift_time(seconds: float) -> str:
    """Swift's ``last_modified`` in listings: ISO 8601 with microseconds, UTC, no zone."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def meta_updates(headers: dict, kind: str) -> dict[str, str]:
    """``X-<Kind>-Meta-*`` of a request -> {lower-case header: value}; a removal (empty
    value, or ``X-Remove-<Kind>-Meta-*``) has the value ''."""
    prefix, remove = f"x-{kind}-meta-", f"x-remove-{kind}-meta-"
    updates = {}
    for name, value in headers.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            updates[name] = value.strip()
        elif name.startswith(remove) and len(name) > len(remove):
            updates[prefix + name[len(remove):]] = ""
    return updates


def check_meta(meta: dict[str, str]) -> None:
    """Swift's bounds on metadata (names without their ``X-...-Meta-`` prefix). 400."""
    names = {name.split("-meta-", 1)[1]: value for name, value in meta.items()}
    if len(names) > MAX_META_COUNT:
        raise S3Error("InvalidArgument", f"Too many metadata items; max {MAX_META_COUNT}")
    for name, value in names.items():
        if len(name) > MAX_META_NAME:
            raise S3Error("InvalidArgument", f"Metadata name too long; max {MAX_META_NAME}")
        if len(value) > MAX_META_VALUE:
            raise S3Error("InvalidArgument", f"Metadata value longer than {MAX_META_VALUE}")
    if sum(len(k) + len(v) for k, v in names.items()) > MAX_META_TOTAL:
        raise S3Error("InvalidArgument", f"Total metadata too large; max {MAX_META_TOTAL}")


def object_meta(headers: dict) -> dict[str, str]:
    """The user metadata of a PUT or POST, as stored (S3's ``x-amz-meta-*`` keys)."""
    meta = {k: v for k, v in meta_updates(headers, "object").items() if v}
    check_meta(meta)
    return {S3_META + k[len("x-object-meta-"):]: v for k, v in meta.items()}


def object_headers(meta: dict) -> list[tuple[str, str]]:
    """The Swift headers of a stored object's metadata record."""
    headers = [("X-Object-Meta-" + "-".join(p.capitalize() for p in k[len(S3_META):].split("-")), v)
               for k, v in sorted(meta.get("meta", {}).items()) if k.startswith(S3_META)]
    headers.append(("X-Timestamp", f"{meta['mtime_ns'] / 1e9:.5f}"))
    if meta.get("manifest") == "slo":
        headers.append(("X-Static-Large-Object", "True"))
    elif meta.get("manifest") == "dlo":
        headers.append(("X-Object-Manifest", meta.get("dlo", "")))
    return headers


def _split_target(value: str, what: str) -> tuple[str, str]:
    container, _, obj = unquote(value).lstrip("/").partition("/")
    if not container or not obj:
        raise S3Error("InvalidArgument", f"{what} must be <container>/<object>", close=True)
    return container, obj


def _dlo(value: str) -> dict:
    """The metadata fields of ``X-Object-Manifest: <container>/<prefix>``."""
    container, slash, _ = unquote(value).lstrip("/").partition("/")
    if not container or not slash:
        raise S3Error("InvalidArgument", "X-Object-Manifest must be <container>/<prefix>", close=True)
    return {"manifest": "dlo", "dlo": value}


class SwiftObjects:
    """Needs ``app`` (ObjectStoreApp) and ``store`` from the class that mixes it in."""

    app: Any
    store: Any

    def _content_type(self, request: S3Request, key: str) -> str:
        given = request.headers.get("content-type", "")
        if given and request.headers.get("x-detect-content-type", "").lower() != "true":
            return given
        return mimetypes.guess_type(key)[0] or "application/octet-stream"

    def _created(self, etag: str, extra: list | None = None):
        return 201, [("Etag", etag), ("Last-Modified", http_date(self.app.clock())), ("Content-Length", "0"),
                     ("Content-Type", "text/html; charset=UTF-8"), *(extra or [])], b""

    # -- PUT -----------------------------------------------------------------------------

    def _put_object(self, request: S3Request, bucket: str, key: str):
        app = self.app
        app._owned_bucket(request, bucket)
        directory, _, _ = self.store.paths(bucket, key)  # a key we can store, before a byte is read
        headers = request.headers
        if headers.get("if-none-match", "").strip() == "*" and self.store.object_meta(directory, key) is not None:
            raise S3Error("PreconditionFailed", "the object exists (If-None-Match: *)", close=True)
        meta = object_meta(headers)
        if "x-copy-from" in headers:
            app._drain_small(request)
            source = _split_target(headers["x-copy-from"], "X-Copy-From")
            return self._copy(request, source, (bucket, key), meta)
        if request.query.get("multipart-manifest") == "put":
            return self._put_slo(request, bucket, key, meta)
        extra = _dlo(headers["x-object-manifest"]) if "x-object-manifest" in headers else None
        expected = headers.get("etag", "").strip().strip('"').lower()

        def verify(md5: str) -> None:
            if expected and expected != md5:
                raise S3Error("BadDigest", f"the ETag {expected[:64]!r} is not the MD5 of the body ({md5})")

        reader = app._upload_reader(request, app.max_body)
        md5 = app.store_body(request, bucket, key, reader, self._content_type(request, key), meta, verify, extra)
        return self._created(md5)

    def _put_slo(self, request: S3Request, bucket: str, key: str, meta: dict):
        reader = BodyReader(request, swift_large.MAX_MANIFEST_BODY)
        body = reader.read_all()
        reader.check()
        stored, fields = swift_large.parse_slo(body, self.store, request.caller)
        payload = json.dumps(stored).encode()
        _, data, meta_path = self.store.paths(bucket, key)
        fd, tmp = tempfile.mkstemp(prefix="manifest-", dir=self.store.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            self.app.commit(request, bucket, key, tmp, data, meta_path, hashlib.md5(payload).hexdigest(),
                            self._content_type(request, key), meta, fields)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self._created(f'"{fields["slo_etag"]}"')

    # -- COPY ----------------------------------------------------------------------------

    def _copy_object(self, request: S3Request, bucket: str, key: str):
        if request.headers.get("destination-account"):
            raise S3Error("NotImplemented", "copying to another account is not supported by this store")
        if "destination" not in request.headers:
            raise S3Error("InvalidArgument", "COPY needs a Destination header: <container>/<object>")
        target = _split_target(request.headers["destination"], "Destination")
        return self._copy(request, (bucket, key), target, object_meta(request.headers))

    def _copy(self, request: S3Request, source_at: tuple[str, str], target: tuple[str, str], meta: dict):
        """Copy the bytes of ``source_at`` (a large object's joined) to ``target``; the
        source's metadata, updated by ``meta`` (replaced with ``X-Fresh-Metadata``)."""
        app = self.app
        bucket, key = target
        app._owned_bucket(request, bucket)
        _, data, meta_path = self.store.paths(bucket, key)
        source = app.open_source(request, *source_at)
        tmp = ""
        try:
            if source.size > app.max_body:
                raise S3Error("EntityTooLarge", f"the source is {source.size} bytes, more than {app.max_body}")
            tmp, md5 = app.copy_to_tmp(source, 0, source.size, "copy-")
            fresh = request.headers.get("x-fresh-metadata", "").lower() in ("true", "1", "yes", "on")
            merged = meta if fresh else {**source.meta.get("meta", {}), **meta}
            kind = request.headers.get("content-type") or source.content_type
            app.commit(request, bucket, key, tmp, data, meta_path, md5, kind, merged)
        finally:
            source.release()
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        copied_from = "/".join(source_at)
        return self._created(md5, [("X-Copied-From", copied_from),
                                   ("X-Copied-From-Last-Modified", http_date(source.mtime))])

    # -- GET, HEAD -------------------------------------------------------------------------

    def _get_object(self, request: S3Request, bucket: str, key: str):
        if request.query.get("multipart-manifest") == "get":
            self.app._owned_bucket(request, bucket)
            plain = open_plain(self.store, bucket, key)
            if plain.meta.get("manifest") == "slo":
                status, headers, body = answer_get(request.headers, plain, plain.etag)
                headers = [(n, "application/json; charset=utf-8") if n == "Content-Type" else (n, v)
                           for n, v in headers]
                return status, [*headers, *object_headers(plain.meta)], body
            plain.release()
        source = self.app.open_source(request, bucket, key)
        try:
            etag = whole_md5(self.store, bucket, key, source)
        except BaseException:
            source.release()
            raise
        status, headers, body = answer_get(request.headers, source, etag, quoted=bool(source.kind))
        return status, [*headers, *object_headers(source.meta)], body

    # -- POST, DELETE ---------------------------------------------------------------------

    def _post_object(self, request: S3Request, bucket: str, key: str):
        """Replace the object's user metadata (and its content type, if sent)."""
        app = self.app
        app._drain_small(request)
        app._owned_bucket(request, bucket)
        meta = object_meta(request.headers)
        directory, data, meta_path = self.store.paths(bucket, key)
        record = self.store.object_meta(directory, key)  # may rehash: outside the lock
        if record is None:
            raise no_such_key(key)
        changes: dict = {"meta": meta}
        if request.headers.get("content-type"):
            changes["content_type"] = request.headers["content-type"]
        if "x-object-manifest" in request.headers:
            changes.update(_dlo(request.headers["x-object-manifest"]))
        with self.store.lock:
            try:
                st = os.stat(data)
            except FileNotFoundError:
                raise no_such_key(key) from None
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (record["ino"], record["size"], record["mtime_ns"]):
                raise swift_large.conflict("the object changed while its metadata was updated; try again")
            self.store.write_json(meta_path, {**record, **changes})
        return 202, [("Content-Length", "0"), ("Content-Type", "text/html; charset=UTF-8")], b""

    def _delete_object(self, request: S3Request, bucket: str, key: str):
        app = self.app
        app._owned_bucket(request, bucket)
        directory, _, _ = self.store.paths(bucket, key)
        record = self.store.object_meta(directory, key)
        if record is None:
            raise no_such_key(key)
        if request.query.get("multipart-manifest") == "delete" and record.get("manifest") == "slo":
            return self._delete_slo(request, bucket, key)
        if not app.remove_object(bucket, key):
            raise no_such_key(key)
        return 204, [("Content-Length", "0"), ("Content-Type", "text/html; charset=UTF-8")], b""

    def _delete_slo(self, request: S3Request, bucket: str, key: str):
        """Delete an SLO's segments (those the caller may delete), then the manifest."""
        deleted = missing = 0
        errors = []
        for segment in swift_large.slo_segments(self.store, bucket, key):
            name = str(segment.get("name", ""))
            try:
                seg_bucket, seg_key = swift_large.split_path(name, "segment")
                self.app._owned_bucket(request, seg_bucket)
                if self.app.remove_object(seg_bucket, seg_key):
                    deleted += 1
                else:
                    missing += 1
            except S3Error as e:
                if e.code in ("NoSuchBucket", "NoSuchKey"):
                    missing += 1
                else:
                    errors.append([name, e.message])
        if self.app.remove_object(bucket, key):
            deleted += 1
        else:
            missing += 1
        result = {"Number Deleted": deleted, "Number Not Found": missing, "Response Body": "",
                  "Response Status": "400 Bad Request" if errors else "200 OK", "Errors": errors}
        if "json" in request.headers.get("accept", ""):
            body, kind = json.dumps(result).encode(), "application/json; charset=utf-8"
        else:
            text = "".join(f"{k}: {v}\n" for k, v in result.items() if k != "Errors")
            body, kind = (text + "Errors: " + "; ".join(f"{n} {m}" for n, m in errors) + "\n").encode(), \
                "text/plain; charset=utf-8"
        return 200, [("Content-Type", kind), ("Content-Length", str(len(body)))], body
