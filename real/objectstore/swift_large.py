"""Swift's large objects: an object whose bytes are other objects', in order.

A *static* large object (SLO) is made by ``PUT ...?multipart-manifest=put`` with a JSON
list of segments (``{"path": "/<container>/<object>", "etag": <md5 or null>,
"size_bytes": <int or null>}``): every segment must exist then, be a plain object the
caller's project owns and match the ETag and size given. Its file holds the manifest in
Swift's stored form (``name``, ``hash``, ``bytes``, ``content_type``), which ``GET
?multipart-manifest=get`` returns; its metadata record adds ``manifest: "slo"``, the
total size, the segment count and the ETag (the MD5 of the segments' MD5 hex strings,
Swift's). A *dynamic* large object (DLO) is any object stored with ``X-Object-Manifest:
<container>/<prefix>``: its bytes are, at each read, those of the objects of that
container whose names start with the prefix, in name order.

``open_object`` opens any object for reading, manifests included, so a large object
uploaded with Swift downloads through S3 too (its S3 ETag is ``<Swift ETag>-<segments>``,
the form of a multipart upload). Segments are checked (present, same size and ETag,
readable by the caller) before the first byte goes out; one replaced while a body
streams ends that body short, so a client sees a short read, never wrong bytes.

Bounds: 1,000 segments and a 2 MiB manifest (Swift's own defaults are of that order;
the manifest is read whole), 10,000 segments in a DLO (its listing is sorted in memory
at each read), 64 GiB in all (the multipart bound). Not supported: nested manifests
(a segment that is itself a manifest), segment ``range``s, ``data`` segments,
``?multipart-manifest=get`` of a DLO.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from urllib.parse import unquote

from real.objectstore import multipart
from real.objectstore.objects import Source, list_keys, no_such_key, open_plain
from real.objectstore.protocol import Caller, FileBody, S3Error

MAX_SEGMENTS = 1000
MAX_MANIFEST_BODY = 2 * 1024 * 1024
MAX_DLO_SEGMENTS = 10_000
MAX_TOTAL = multipart.MAX_OBJECT_SIZE


def conflict(message: str) -> S3Error:
    """A large object whose segments no longer match its manifest (409)."""
    error = S3Error("SegmentMismatch", message)
    error.status = 409
    return error


def _bad_manifest(message: str) -> S3Error:
    return S3Error("MalformedManifest", f"Invalid SLO manifest: {message}")


def split_path(path: str, what: str) -> tuple[str, str]:
    """``/<container>/<object>`` (or without the leading slash) -> (container, object)."""
    container, _, obj = unquote(path).lstrip("/").partition("/")
    if not container or not obj:
        raise _bad_manifest(f"{what} {path[:200]!r} is not /<container>/<object>")
    return container, obj


def _readable(store, bucket: str, caller: Caller) -> None:
    info = store.bucket_info(bucket)
    if info["owner"] != caller.project and not caller.is_admin:
        raise S3Error("AccessDenied", f"Access Denied: container {bucket!r} belongs to another project")


def _segment_meta(store, bucket: str, key: str) -> dict:
    """The metadata of a plain object used as a segment; NoSuchKey, or 400 for a manifest."""
    directory, _, _ = store.paths(bucket, key)
    meta = store.object_meta(directory, key)
    if meta is None:
        raise no_such_key(key)
    if meta.get("manifest"):
        raise _bad_manifest(f"segment /{bucket}/{key} is itself a large object (nested manifests are not supported)")
    return meta


def parse_slo(body: bytes, store, caller: Caller) -> tuple[list[dict], dict]:
    """A client's SLO manifest, checked against the segments -> (the stored form, the
    metadata fields of the manifest object). Raises S3Error (400 for the manifest, 403
    or 404 for a segment)."""
    try:
        entries = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad_manifest("the body is not JSON") from None
    if not isinstance(entries, list) or not entries:
        raise _bad_manifest("the body must be a non-empty list of segments")
    if len(entries) > MAX_SEGMENTS:
        raise _bad_manifest(f"{len(entries)} segments, at most {MAX_SEGMENTS}")
    stored, total = [], 0
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _bad_manifest(f"segment {index} has no path")
        extra = set(entry) - {"path", "etag", "size_bytes"}
        if extra:
            raise _bad_manifest(f"segment {index}: {sorted(extra)[0]!r} is not supported")
        bucket, key = split_path(entry["path"], f"segment {index} path")
        try:
            _readable(store, bucket, caller)
            meta = _segment_meta(store, bucket, key)
        except S3Error as e:
            if e.code not in ("NoSuchBucket", "NoSuchKey"):
                raise
            raise _bad_manifest(f"segment {index} /{bucket}/{key} does not exist") from None
        etag = meta.get("md5") or meta["etag"]
        wanted_etag, wanted_size = entry.get("etag"), entry.get("size_bytes")
        if wanted_etag is not None and str(wanted_etag).strip('"') not in (etag, meta["etag"]):
            raise _bad_manifest(f"segment {index} /{bucket}/{key}: ETag {wanted_etag!r} does not match {etag!r}")
        if wanted_size is not None and wanted_size != meta["size"]:
            raise _bad_manifest(f"segment {index} /{bucket}/{key}: size_bytes {wanted_size!r} does not match "
                                f"{meta['size']}")
        if meta["size"] < 1:
            raise _bad_manifest(f"segment {index} /{bucket}/{key} is empty")
        total += meta["size"]
        stored.append({"name": f"/{bucket}/{key}", "hash": meta["etag"], "bytes": meta["size"],
                       "content_type": meta.get("content_type", "application/octet-stream")})
    if total > MAX_TOTAL:
        raise S3Error("EntityTooLarge", f"The segments add up to {total} bytes, more than {MAX_TOTAL}")
    fields = {"manifest": "slo", "slo_size": total, "slo_count": len(stored),
              "slo_etag": hashlib.md5("".join(s["hash"] for s in stored).encode()).hexdigest()}
    return stored, fields


def slo_segments(store, bucket: str, key: str) -> list[dict]:
    """The stored manifest of an SLO (``name``, ``hash``, ``bytes``...)."""
    _, data, _ = store.paths(bucket, key)
    try:
        with open(data, "rb") as f:
            segments = json.loads(f.read(MAX_MANIFEST_BODY + 1))
    except FileNotFoundError:
        raise no_such_key(key) from None
    except ValueError:
        raise conflict(f"the manifest of /{bucket}/{key} is not readable") from None
    if not isinstance(segments, list):
        raise conflict(f"the manifest of /{bucket}/{key} is not a list")
    return segments


def _check_segments(store, segments: list[tuple[str, str, int, str]], caller: Caller) -> None:
    for bucket, key, size, etag in segments:
        _readable(store, bucket, caller)
        directory, _, _ = store.paths(bucket, key)
        meta = store.object_meta(directory, key)
        if meta is None or meta["size"] != size or etag not in (meta["etag"], meta.get("md5")):
            raise conflict(f"segment /{bucket}/{key} is missing or has changed since the manifest was stored")


def _dlo_segments(store, prefix_path: str, caller: Caller) -> list[tuple[str, str, int, str]]:
    bucket, _, prefix = unquote(prefix_path).lstrip("/").partition("/")
    _readable(store, bucket, caller)
    entries, truncated = list_keys(store, bucket, prefix, "", "", MAX_DLO_SEGMENTS)
    if truncated:
        raise conflict(f"the large object has more than {MAX_DLO_SEGMENTS} segments under {prefix_path!r}")
    return [(bucket, key, meta["size"], meta["etag"]) for key, meta in entries
            if meta is not None and not meta.get("manifest")]


def open_object(store, bucket: str, key: str, caller: Caller) -> Source:
    """The object for reading: its own bytes, or a large object's segments'."""
    source = open_plain(store, bucket, key)
    kind = source.meta.get("manifest")
    if not kind:
        return source
    source.release()
    meta = source.meta
    if kind == "slo":
        segments = [(*split_path(s["name"], "segment"), int(s["bytes"]), str(s["hash"]))
                    for s in slo_segments(store, bucket, key)]
        _check_segments(store, segments, caller)
        swift_etag = meta["slo_etag"]
    else:
        segments = _dlo_segments(store, meta.get("dlo", ""), caller)
        swift_etag = hashlib.md5("".join(s[3] for s in segments).encode()).hexdigest()
    size = sum(s[2] for s in segments)
    return Source(size, f"{swift_etag}-{len(segments)}", swift_etag, source.mtime, meta,
                  lambda offset, length: SegmentsBody(store, segments, offset, length), kind=kind)


class SegmentsBody:
    """A WSGI body of ``length`` bytes from ``offset`` of the segments joined, opened
    one at a time; a segment whose size changed ends the body with an error."""

    def __init__(self, store, segments: list[tuple[str, str, int, str]], offset: int, length: int):
        self.store = store
        self.segments = segments
        self.offset = offset
        self.length = length
        self._open: FileBody | None = None

    def __iter__(self) -> Iterator[bytes]:
        skip, remaining = self.offset, self.length
        for bucket, key, size, _ in self.segments:
            if remaining <= 0:
                break
            if skip >= size:
                skip -= size
                continue
            _, data, _ = self.store.paths(bucket, key)
            f = open(data, "rb")  # noqa: SIM115 - closed below or by close()
            count = min(size - skip, remaining)
            self._open = FileBody(f, count, skip)
            if os.fstat(f.fileno()).st_size != size:
                self.close()
                raise OSError(f"segment /{bucket}/{key} changed while the large object was read")
            sent = 0
            for chunk in self._open:
                sent += len(chunk)
                yield chunk
            self.close()
            if sent != count:
                raise OSError(f"segment /{bucket}/{key} ended early")
            remaining -= count
            skip = 0

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None
