"""The object store's WSGI application: S3 requests dispatched to buckets and objects
(the Swift API's requests go to ``swift.SwiftApi``, which uses this application's
helpers to store and read).

What it serves is in the package docstring; the disk layout is ``store.DiskStore``,
the protocol pieces ``protocol``, the signatures ``auth``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote, unquote

from real.objectstore import multipart
from real.objectstore.auth import Lookup, authenticate
from real.objectstore.multipart import MultipartUploads
from real.objectstore.multipart_api import MultipartHandlers
from real.objectstore.objects import Source, answer_get, list_keys
from real.objectstore.protocol import (
    BUCKET_META,
    KNOWN_FLAGS,
    MAX_BODY,
    MAX_KEYS,
    MAX_SKEW,
    MAX_SMALL_BODY,
    META_DIR,
    SUBRESOURCES,
    BodyReader,
    S3Error,
    S3Request,
    content_type,
    element,
    http_date,
    iso_time,
    user_meta,
    validate_bucket_name,
    xml_document,
)
from real.objectstore.store import DiskStore
from real.objectstore.swift import SwiftApi, is_swift
from real.objectstore.swift_large import open_object

log = logging.getLogger("novalab.objectstore")


class ObjectStoreApp(MultipartHandlers):
    """The WSGI application. ``lookup(access_key) -> (secret_key, project, is_admin) |
    None``; ``clock`` gives the server's time (seconds since the epoch)."""

    def __init__(self, root, lookup: Lookup, *, max_body: int = MAX_BODY, max_skew: float = MAX_SKEW,
                 clock: Callable[[], float] = time.time, min_part_size: int = multipart.MIN_PART_SIZE,
                 max_uploads: int = multipart.MAX_UPLOADS_PER_BUCKET):
        self.store = DiskStore(root, clock)
        self.uploads = MultipartUploads(self.store, min_part_size=min_part_size, max_uploads=max_uploads)
        self.root = self.store.root
        self.lookup = lookup
        self.max_body = max_body
        self.max_skew = max_skew
        self.clock = clock
        self.swift = SwiftApi(self)

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        if is_swift(environ):
            return self.swift(environ, start_response)
        request_id = uuid.uuid4().hex[:16].upper()
        try:
            request = S3Request(environ)
            status, headers, body = self._handle(request)
        except S3Error as e:
            status, headers, body = self._error(environ, e, request_id)
        except Exception:  # a bug or an I/O failure: answer, log, keep serving
            log.exception("objectstore: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, headers, body = self._error(environ, S3Error("InternalError", "We encountered an internal "
                                                                 "error. Please try again."), request_id)
        headers = [*headers, ("x-amz-request-id", request_id), ("Date", http_date(self.clock())),
                   ("Server", "novalab-objectstore")]
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            if hasattr(body, "close"):
                body.close()
            return []
        return [body] if isinstance(body, bytes) else body

    def _error(self, environ, e: S3Error, request_id: str):
        resource = environ.get("PATH_INFO", "")
        extra = "".join(element(k, v) for k, v in e.extra.items())
        body = xml_document("Error", element("Code", e.code) + element("Message", e.message) + extra
                            + element("Resource", resource) + element("RequestId", request_id), namespace=False)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body))), *e.headers]
        if e.close:
            headers.append(("Connection", "close"))
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            headers[1] = ("Content-Length", "0")
        return e.status, headers, body

    def _handle(self, request: S3Request):
        raw_bucket, _, raw_key = request.raw_path.lstrip("/").partition("/")
        try:
            bucket = unquote(raw_bucket, errors="strict")
            key = unquote(raw_key, errors="strict")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI (not UTF-8).") from None
        request.caller = authenticate(request, self.lookup, self.clock(), self.max_skew)
        method = request.method
        unsupported = sorted(SUBRESOURCES.intersection(request.query))
        if unsupported:
            raise S3Error("NotImplemented", f"The ?{unsupported[0]} subresource is not implemented by this store",
                          close=True)
        unknown = sorted(name for name in request.flags if name not in KNOWN_FLAGS)
        if unknown:
            raise S3Error("InvalidRequest", f"Unknown subresource ?{unknown[0][:64]}", close=True)
        query = request.query
        if not bucket:
            if method == "GET":
                self._drain_small(request)
                return self._list_buckets(request)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service", close=True)
        if not key:
            bucket_handler: Callable[[S3Request, str], tuple] | None
            bucket_handler = {"GET": self._list_objects, "PUT": self._create_bucket, "DELETE": self._delete_bucket,
                              "HEAD": self._head_bucket}.get(method)
            if method == "GET" and "uploads" in query:
                bucket_handler = self._list_uploads
            if bucket_handler is None:
                raise S3Error("MethodNotAllowed", f"{method} is not allowed on a bucket", close=True)
            if method != "PUT":
                self._drain_small(request)
            return bucket_handler(request, bucket)
        handler: Callable[[S3Request, str, str], tuple] | None
        if "uploads" in query:
            handler = {"POST": self._create_upload}.get(method)
        elif "uploadId" in query:
            handler = {"PUT": self._upload_part, "POST": self._complete_upload, "DELETE": self._abort_upload,
                       "GET": self._list_parts}.get(method)
        elif "partNumber" in query:
            raise S3Error("NotImplemented", "GET or PUT of one part of a completed object (?partNumber without "
                          "?uploadId) is not implemented by this store", close=True)
        else:
            handler = {"GET": self._get_object, "HEAD": self._get_object, "PUT": self._put_object,
                       "DELETE": self._delete_object}.get(method)
        if handler is None:
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on this resource", close=True)
        if method not in ("PUT", "POST"):
            self._drain_small(request)
        return handler(request, bucket, key)

    # -- authentication ----------------------------------------------------------------

    # -- buckets -----------------------------------------------------------------------

    def _owned_bucket(self, request: S3Request, bucket: str) -> dict:
        info = self.store.bucket_info(bucket)
        caller = request.caller
        if info["owner"] != caller.project and not caller.is_admin:
            raise S3Error("AccessDenied", f"Access Denied: bucket {bucket!r} belongs to another project", close=True)
        expected = request.headers.get("x-amz-expected-bucket-owner")
        if expected is not None and expected != info["owner"]:  # S3's check; the API's image registration uses it
            raise S3Error("AccessDenied", "Access Denied: the bucket is not the expected bucket owner's", close=True)
        return info

    def _list_buckets(self, request: S3Request):
        caller = request.caller
        entries = []
        for name in sorted(os.listdir(self.store.root)):
            if name.startswith("."):
                continue
            try:
                info = self.store.bucket_info(name)
            except S3Error:
                continue
            if info["owner"] == caller.project or caller.is_admin:
                created = element("CreationDate", iso_time(info["created"]))
                entries.append(f"<Bucket>{element('Name', name)}{created}</Bucket>")
        owner = f"<Owner>{element('ID', caller.project)}{element('DisplayName', caller.project)}</Owner>"
        return self._xml_response("ListAllMyBucketsResult", owner + "<Buckets>" + "".join(entries) + "</Buckets>")

    def _create_bucket(self, request: S3Request, bucket: str):
        validate_bucket_name(bucket, strict=True)
        reader = BodyReader(request, MAX_SMALL_BODY)
        reader.read_all()  # CreateBucketConfiguration: any region is fine here
        reader.check()
        if self.make_bucket(request.caller.project, bucket):
            return 200, [("Location", f"/{bucket}"), ("Content-Length", "0")], b""
        raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and "
                      "you already own it.", {"BucketName": bucket})

    def make_bucket(self, project: str, bucket: str, extra: dict | None = None) -> bool:
        """Create ``bucket`` for ``project`` (``extra``: more fields of its record): True
        when made, False when the project has it already; BucketAlreadyExists when
        another project has."""
        target = self.store.bucket_dir(bucket)
        with self.store.lock:
            try:
                info = self.store.bucket_info(bucket)
            except S3Error:
                info = None
            if info is None:
                staging = tempfile.mkdtemp(prefix="bucket-", dir=self.store.tmp)
                self.store.write_json(os.path.join(staging, BUCKET_META),
                                      {"owner": project, "created": self.clock(), **(extra or {})})
                os.mkdir(os.path.join(staging, META_DIR))
                try:
                    os.rename(staging, target)  # fails on an existing bucket (never empty)
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)
                    info = self.store.bucket_info(bucket)
                else:
                    return True
        if info["owner"] == project:
            return False
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available. Please select a different "
                      "name and try again.", {"BucketName": bucket})

    def _head_bucket(self, request: S3Request, bucket: str):
        self._owned_bucket(request, bucket)
        return 200, [("Content-Length", "0")], b""

    def _delete_bucket(self, request: S3Request, bucket: str):
        with self.store.lock:
            self._owned_bucket(request, bucket)
            directory = self.store.bucket_dir(bucket)
            if any(not name.startswith(".") for name in os.listdir(directory)):
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", {"BucketName": bucket})
            grave = os.path.join(self.store.tmp, f"deleted-{uuid.uuid4().hex}")
            os.rename(directory, grave)
        shutil.rmtree(grave, ignore_errors=True)
        return 204, [], b""

    def _list_objects(self, request: S3Request, bucket: str):
        info = self._owned_bucket(request, bucket)
        query = request.query
        v2 = query.get("list-type") == "2"
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        encode = query.get("encoding-type") == "url"
        max_keys, after = _listing_window(query, v2)
        entries, truncated = list_keys(self.store, bucket, prefix, delimiter, after, max_keys)
        contents = [(key, meta) for key, meta in entries if meta is not None]
        prefixes = [key for key, meta in entries if meta is None]
        last = entries[-1][0] if entries else None

        def enc(value):
            return quote(value, safe="/") if encode else value

        owner = f"<Owner>{element('ID', info['owner'])}{element('DisplayName', info['owner'])}</Owner>"
        body = [element("Name", bucket), element("Prefix", enc(prefix))]
        if v2:
            body.append(element("KeyCount", len(contents) + len(prefixes)))
            if query.get("continuation-token"):
                body.append(element("ContinuationToken", query["continuation-token"]))
            if query.get("start-after"):
                body.append(element("StartAfter", enc(query["start-after"])))
        else:
            body.append(element("Marker", enc(after)))
        body.append(element("MaxKeys", max_keys))
        if delimiter:
            body.append(element("Delimiter", enc(delimiter)))
        if encode:
            body.append(element("EncodingType", "url"))
        body.append(element("IsTruncated", "true" if truncated else "false"))
        if truncated and last is not None:
            if v2:
                body.append(element("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode()))
            else:
                body.append(element("NextMarker", enc(last)))
        show_owner = not v2 or query.get("fetch-owner") == "true"
        for key, meta in contents:
            etag, size = meta["etag"], meta["size"]
            if meta.get("manifest") == "slo":  # a Swift large object: its segments' size
                etag, size = f'{meta["slo_etag"]}-{meta["slo_count"]}', meta["slo_size"]
            body.append("<Contents>" + element("Key", enc(key))
                        + element("LastModified", iso_time(meta["mtime_ns"] / 1e9))
                        + element("ETag", f'"{etag}"') + element("Size", size)
                        + element("StorageClass", "STANDARD") + (owner if show_owner else "") + "</Contents>")
        for common in prefixes:
            body.append(f"<CommonPrefixes>{element('Prefix', enc(common))}</CommonPrefixes>")
        return self._xml_response("ListBucketResult", "".join(body))

    # -- objects -------------------------------------------------------------------------

    def _put_object(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        if "x-amz-copy-source" in request.headers:
            return self._copy_object(request, bucket, key)
        reader = self._upload_reader(request, self.max_body)
        etag = self.store_body(request, bucket, key, reader, content_type(request), user_meta(request))
        return 200, [("ETag", f'"{etag}"'), ("Content-Length", "0")], b""

    def store_body(self, request: S3Request, bucket: str, key: str, reader: BodyReader, kind: str, metadata: dict,
                   verify: Callable[[str], None] | None = None, extra: dict | None = None) -> str:
        """Stream the request body into a temporary file, check it (``reader.check()``,
        then ``verify(md5 hex)``) and commit it as the object: -> its MD5 hex."""
        _directory, data, meta_path = self.store.paths(bucket, key)
        fd, tmp = tempfile.mkstemp(prefix="put-", dir=self.store.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in reader.chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            reader.check()
            etag = reader.md5.hexdigest()
            if verify is not None:
                verify(etag)
            self.commit(request, bucket, key, tmp, data, meta_path, etag, kind, metadata, extra)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return etag

    def _upload_reader(self, request: S3Request, limit: int) -> BodyReader:
        reader = BodyReader(request, limit)
        if reader.length is None and request.headers.get("transfer-encoding", "").lower() != "chunked":
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", close=True)
        return reader

    def commit(self, request: S3Request, bucket: str, key: str, tmp: str, data: str, meta_path: str, etag: str,
               content_type: str, user_meta: dict, extra: dict | None = None):
        """Rename a verified temporary file into place as the object, with its metadata
        (``extra``: more fields of the record, a Swift manifest's)."""
        with self.store.lock:
            self._owned_bucket(request, bucket)  # still there, still theirs
            os.replace(tmp, data)
            st = os.stat(data)
            self.store.write_json(meta_path, {"key": key, "etag": etag, "size": st.st_size,
                                              "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
                                              "content_type": content_type, "meta": user_meta, **(extra or {})})

    def open_source(self, request: S3Request, bucket: str, key: str) -> Source:
        """The object for reading (a Swift large object's segments included), from a
        bucket the caller owns."""
        self._owned_bucket(request, bucket)
        return open_object(self.store, bucket, key, request.caller)

    def _open_copy_source(self, request: S3Request) -> tuple[Source, str, str]:
        """-> (source, bucket, key) of ``x-amz-copy-source``, which the caller must own."""
        source = unquote(request.headers["x-amz-copy-source"])
        source, _, version = source.partition("?")
        if version:
            raise S3Error("NotImplemented", "Copying a version (?versionId) is not implemented by this store")
        source_bucket, _, source_key = source.lstrip("/").partition("/")
        if not source_bucket or not source_key:
            raise S3Error("InvalidArgument", "x-amz-copy-source must be <bucket>/<key>",
                          {"ArgumentName": "x-amz-copy-source"})
        return self.open_source(request, source_bucket, source_key), source_bucket, source_key

    def copy_to_tmp(self, source: Source, offset: int, size: int, prefix: str) -> tuple[str, str]:
        """Copy ``size`` bytes of ``source`` from ``offset`` into a new temporary file: -> (path, MD5 hex)."""
        md5 = hashlib.md5()
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=self.store.tmp)
        body = source.read(offset, size)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in body:
                    md5.update(chunk)
                    out.write(chunk)
                out.flush()
                if out.tell() != size:
                    raise S3Error("InternalError", "The source of the copy changed while it was read")
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            body.close()  # type: ignore[attr-defined]
        return tmp, md5.hexdigest()

    def _copy_object(self, request: S3Request, bucket: str, key: str):
        self._drain_small(request)
        _directory, data, meta_path = self.store.paths(bucket, key)
        directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE",
                          {"ArgumentName": "x-amz-metadata-directive"})
        source, source_bucket, source_key = self._open_copy_source(request)
        tmp = ""
        try:
            if (source_bucket, source_key) == (bucket, key) and directive == "COPY":
                raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                              "to itself without changing the object's metadata.")
            if source.size > self.max_body:  # S3's rule: larger objects are copied part by part
                raise S3Error("InvalidRequest", f"The source is larger than {self.max_body} bytes: copy it with a "
                              "multipart upload (UploadPartCopy)")
            tmp, md5 = self.copy_to_tmp(source, 0, source.size, "copy-")
            etag = source.etag if "-" in source.etag and not source.kind else md5
            if directive == "REPLACE":
                kind, metadata = content_type(request), user_meta(request)
            else:
                kind, metadata = source.content_type, source.meta.get("meta", {})
            self.commit(request, bucket, key, tmp, data, meta_path, etag, kind, metadata)
        finally:
            source.release()
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        result = element("LastModified", iso_time(self.clock())) + element("ETag", f'"{etag}"')
        return self._xml_response("CopyObjectResult", result)

    def _get_object(self, request: S3Request, bucket: str, key: str):
        source = self.open_source(request, bucket, key)
        status, headers, body = answer_get(request.headers, source, source.etag)
        return status, [*headers, *sorted(source.meta.get("meta", {}).items())], body

    def _delete_object(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        self.remove_object(bucket, key)
        return 204, [], b""

    def remove_object(self, bucket: str, key: str) -> bool:
        """Delete the object's file and metadata: -> whether there was an object."""
        _, data, meta_path = self.store.paths(bucket, key)
        found = False
        with self.store.lock:
            for path in (data, meta_path):
                try:
                    os.unlink(path)
                    found = found or path == data
                except FileNotFoundError:
                    pass
        return found

    # -- helpers ------------------------------------------------------------------------

    def _drain_small(self, request: S3Request):
        reader = BodyReader(request, MAX_SMALL_BODY)
        reader.read_all()
        reader.check()

    def _xml_response(self, root: str, body: str):
        payload = xml_document(root, body)
        return 200, [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))], payload


def _listing_window(query, v2: bool) -> tuple[int, str]:
    """-> (max-keys, the key to list after) of a ListObjects (v1 or v2) query. Raises S3Error."""
    try:
        max_keys = int(query.get("max-keys", MAX_KEYS))
    except ValueError:
        raise S3Error("InvalidArgument", "max-keys must be an integer", {"ArgumentName": "max-keys"}) from None
    if max_keys < 0:
        raise S3Error("InvalidArgument", "max-keys must not be negative", {"ArgumentName": "max-keys"})
    max_keys = min(max_keys, MAX_KEYS)
    if v2:
        token = query.get("continuation-token")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, ValueError):
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              {"ArgumentName": "continuation-token"}) from None
        else:
            after = query.get("start-after", "")
    else:
        after = query.get("marker", "")
    return max_keys, after
