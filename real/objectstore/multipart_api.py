"""The multipart-upload requests of the object store (a mixin of ``ObjectStoreApp``):
create, upload a part (or copy one), complete, abort, list parts, list uploads. The
parts on disk are ``multipart.MultipartUploads``; this module turns requests into calls
on it and its answers into S3's XML."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from real.objectstore import multipart
from real.objectstore.protocol import (
    MAX_KEYS,
    BodyReader,
    S3Error,
    S3Request,
    bounded_int,
    content_type,
    element,
    iso_time,
    parse_range,
    user_meta,
)


class MultipartHandlers:
    """Needs from the app: ``store``, ``uploads``, ``clock``, ``max_body`` and the helpers
    ``_owned_bucket``, ``_drain_small``, ``_upload_reader``, ``_open_copy_source``,
    ``_xml_response``."""

    store: Any
    uploads: Any
    clock: Any
    max_body: int
    _owned_bucket: Any
    _drain_small: Any
    _upload_reader: Any
    _open_copy_source: Any
    _xml_response: Any

    def _create_upload(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        self.store.paths(bucket, key)  # the key is one we can store
        self._drain_small(request)
        upload_id = self.uploads.create(bucket, key, content_type(request), user_meta(request))
        return self._xml_response("InitiateMultipartUploadResult", element("Bucket", bucket) + element("Key", key)
                                  + element("UploadId", upload_id))

    def _upload_part(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        number = multipart.part_number(request.query.get("partNumber"))
        upload_id = request.query["uploadId"]
        if "x-amz-copy-source" in request.headers:
            return self._upload_part_copy(request, bucket, key, upload_id, number)
        self.uploads.directory(bucket, key, upload_id)  # before reading a byte of the body
        reader = self._upload_reader(request, min(self.max_body, multipart.MAX_PART_SIZE))
        etag, _ = self.uploads.put_part(bucket, key, upload_id, number, reader.chunks(), reader.check)
        return 200, [("ETag", f'"{etag}"'), ("Content-Length", "0")], b""

    def _upload_part_copy(self, request: S3Request, bucket: str, key: str, upload_id: str, number: int):
        self._drain_small(request)
        self.uploads.directory(bucket, key, upload_id)
        source, _, _ = self._open_copy_source(request)
        try:
            wanted = (0, source.size - 1)
            if "x-amz-copy-source-range" in request.headers:
                wanted = parse_range(request.headers["x-amz-copy-source-range"], source.size) or (-1, -1)
                if wanted[0] < 0:
                    raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=<first>-<last>",
                                  {"ArgumentName": "x-amz-copy-source-range"})
            size = max(0, wanted[1] - wanted[0] + 1)
            if size > multipart.MAX_PART_SIZE:
                raise S3Error("EntityTooLarge", f"A part is at most {multipart.MAX_PART_SIZE} bytes")
            body = source.read(wanted[0], size)
            try:
                etag, _ = self.uploads.put_part(bucket, key, upload_id, number, body, lambda: None)
            finally:
                body.close()
        finally:
            source.release()
        result = element("LastModified", iso_time(self.clock())) + element("ETag", f'"{etag}"')
        return self._xml_response("CopyPartResult", result)

    def _complete_upload(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        upload_id = request.query["uploadId"]
        self.uploads.directory(bucket, key, upload_id)
        reader = BodyReader(request, multipart.MAX_COMPLETE_BODY)
        body = reader.read_all()
        reader.check()
        wanted = multipart.parse_complete_body(body)
        _, data, meta_path = self.store.paths(bucket, key)
        etag = self.uploads.complete(bucket, key, upload_id, wanted, data, meta_path,
                                     lambda: self._owned_bucket(request, bucket))
        result = (element("Location", f"/{bucket}/{quote(key)}") + element("Bucket", bucket) + element("Key", key)
                  + element("ETag", f'"{etag}"'))
        return self._xml_response("CompleteMultipartUploadResult", result)

    def _abort_upload(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        self.uploads.abort(bucket, key, request.query["uploadId"])
        return 204, [], b""

    def _list_parts(self, request: S3Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        upload_id = request.query["uploadId"]
        path = self.uploads.directory(bucket, key, upload_id)
        max_parts = bounded_int(request.query, "max-parts", MAX_KEYS)
        after = bounded_int(request.query, "part-number-marker", 0, multipart.MAX_PARTS)
        parts = [p for p in self.uploads.parts(path) if p["number"] > after]
        page, truncated = parts[:max_parts], len(parts) > max_parts
        body = [element("Bucket", bucket), element("Key", key), element("UploadId", upload_id),
                element("PartNumberMarker", after), element("MaxParts", max_parts),
                element("IsTruncated", "true" if truncated else "false")]
        if truncated:
            body.append(element("NextPartNumberMarker", page[-1]["number"]))
        for part in page:
            body.append("<Part>" + element("PartNumber", part["number"]) + element("LastModified",
                        iso_time(part["mtime"])) + element("ETag", f'"{part["etag"]}"')
                        + element("Size", part["size"]) + "</Part>")
        return self._xml_response("ListPartsResult", "".join(body))

    def _list_uploads(self, request: S3Request, bucket: str):
        self._owned_bucket(request, bucket)
        query = request.query
        prefix = query.get("prefix", "")
        max_uploads = bounded_int(query, "max-uploads", MAX_KEYS)
        after = (query.get("key-marker", ""), query.get("upload-id-marker", ""))
        uploads = sorted((u["key"], u["upload_id"], u["initiated"]) for u in self.uploads.uploads(bucket)
                         if u["key"].startswith(prefix) and (u["key"], u["upload_id"]) > after)
        page, truncated = uploads[:max_uploads], len(uploads) > max_uploads
        body = [element("Bucket", bucket), element("KeyMarker", after[0]), element("UploadIdMarker", after[1]),
                element("Prefix", prefix), element("MaxUploads", max_uploads),
                element("IsTruncated", "true" if truncated else "false")]
        if truncated:
            body += [element("NextKeyMarker", page[-1][0]), element("NextUploadIdMarker", page[-1][1])]
        for upload_key, upload_id, initiated in page:
            body.append("<Upload>" + element("Key", upload_key) + element("UploadId", upload_id)
                        + element("StorageClass", "STANDARD") + element("Initiated", iso_time(initiated)) + "</Upload>")
        return self._xml_response("ListMultipartUploadsResult", "".join(body))

