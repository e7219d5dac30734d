"""What the object store serves whichever API asks: an object's bytes and validators.

``Source`` is one object opened for reading (a file, or a Swift large object whose
bytes come from other objects: ``swift_large``); ``answer_get`` turns a GET or HEAD of
it into a status, headers and a streamed body (conditions and ranges, S3's rules);
``list_keys`` is one page of a bucket's keys with prefix, delimiter and marker;
``whole_md5`` is the MD5 of a whole object whose ETag is not one (an S3 multipart
upload), which Swift clients check a download against. The S3 application (``app``)
and the Swift one (``swift``) both use them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from real.objectstore.protocol import (
    CHUNK,
    FileBody,
    S3Error,
    check_preconditions,
    http_date,
    parse_range,
    range_still_valid,
    stored_key,
)


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", {"Key": key})


@dataclass
class Source:
    """An object opened for reading. ``read(offset, length)`` is a WSGI body (it has
    ``close``) of those bytes; ``release()`` closes what is open when no body is sent.
    ``etag`` is the S3 ETag (unquoted), ``swift_etag`` the Swift one (the MD5 of the
    bytes, or of the segments' MD5s for a large object)."""

    size: int
    etag: str
    swift_etag: str
    mtime: float
    meta: dict
    read: Callable[[int, int], Iterable[bytes]]
    release: Callable[[], None] = field(default=lambda: None)
    #: "" (the object's own bytes), "slo" or "dlo" (Swift manifests).
    kind: str = ""

    @property
    def content_type(self) -> str:
        return self.meta.get("content_type", "binary/octet-stream")


def open_plain(store, bucket: str, key: str) -> Source:
    """The object's own bytes, from its file (held open until the body is closed)."""
    directory, data, _ = store.paths(bucket, key)
    try:
        f = open(data, "rb")  # noqa: SIM115 - the response body (or release) closes it
    except (FileNotFoundError, IsADirectoryError):
        raise no_such_key(key) from None
    try:
        meta = store.object_meta(directory, key, f)
    except BaseException:
        f.close()
        raise
    if meta is None:  # cannot happen with the file open; for the type checker
        f.close()
        raise no_such_key(key)
    swift_etag = meta.get("md5") or meta["etag"]
    return Source(meta["size"], meta["etag"], swift_etag, meta["mtime_ns"] / 1e9, meta,
                  lambda offset, length: FileBody(f, length, offset), f.close)


def answer_get(headers: Mapping[str, str], source: Source, etag: str, quoted: bool = True
               ) -> tuple[int, list, Iterable[bytes]]:
    """(status, headers, body) of a GET of ``source`` served with ``etag`` (in quotes,
    or bare as Swift sends a plain object's): 304 or 412
    by the request's conditions, 206 for a satisfiable range, else 200 and everything.
    InvalidRange (with ``Content-Range: bytes */size``) past the end; the source is
    released whenever no body goes out."""
    size, mtime = source.size, source.mtime
    validators = [("ETag", f'"{etag}"' if quoted else etag), ("Last-Modified", http_date(mtime))]
    try:
        refused = check_preconditions(headers, etag, mtime)
        if refused == 412:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          {"Condition": "If-Match" if "if-match" in headers else "If-Unmodified-Since"})
        if refused == 304:
            source.release()
            return 304, validators, [b""]
        wanted = parse_range(headers.get("range"), size)
        if wanted is not None and not range_still_valid(headers, etag, mtime):
            wanted = None
    except S3Error as e:
        source.release()
        if e.code == "InvalidRange":
            e.headers = [("Content-Range", f"bytes */{size}")]
        raise
    except BaseException:
        source.release()
        raise
    out = [("Content-Type", source.content_type), ("Accept-Ranges", "bytes"), *validators]
    if wanted is None:
        return 200, [*out, ("Content-Length", str(size))], source.read(0, size)
    first, last = wanted
    out += [("Content-Length", str(last - first + 1)), ("Content-Range", f"bytes {first}-{last}/{size}")]
    return 206, out, source.read(first, last - first + 1)


def list_keys(store, bucket: str, prefix: str, delimiter: str, after: str, limit: int, before: str = ""
              ) -> tuple[list[tuple[str, dict | None]], bool]:
    """One page of the bucket's keys in order: ``(key, metadata)`` for an object and
    ``(common prefix, None)`` for the keys a delimiter rolls up; keys after ``after``
    (and before ``before``, when given) that start with ``prefix``; at most ``limit``.
    -> (entries, truncated)."""
    directory = store.bucket_dir(bucket)
    keys = sorted(k for k in map(stored_key, os.listdir(directory)) if k is not None)
    entries: list[tuple[str, dict | None]] = []
    for key in keys:
        if not key.startswith(prefix) or key <= after:
            continue
        if before and key >= before:
            break
        common = None
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                if (entries and entries[-1][0] == common) or after.startswith(common):
                    continue
        if len(entries) >= limit:
            return entries, limit > 0
        if common is not None:
            entries.append((common, None))
            continue
        meta = store.object_meta(directory, key)
        if meta is not None:  # else deleted while we listed
            entries.append((key, meta))
    return entries, False


def whole_md5(store, bucket: str, key: str, source: Source) -> str:
    """The MD5 hex of the whole of a plain object whose ETag is an S3 multipart one
    (``<md5 of the parts' MD5s>-<parts>``), computed once by reading it and kept in its
    metadata while the file is the one read; any other ETag is returned as it is."""
    if source.kind or "-" not in source.swift_etag:
        return source.swift_etag
    _directory, data, meta_path = store.paths(bucket, key)
    md5 = hashlib.md5()
    try:
        with open(data, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (source.meta.get("ino"), source.size,
                                                           source.meta.get("mtime_ns")):
                return source.swift_etag  # replaced meanwhile: the next request computes it
            for chunk in iter(lambda: f.read(CHUNK), b""):
                md5.update(chunk)
    except FileNotFoundError:
        return source.swift_etag
    digest = md5.hexdigest()
    with store.lock:
        try:
            now = os.stat(data)
            if (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
                store.write_json(meta_path, {**source.meta, "md5": digest})
        except OSError:
            pass
    source.swift_etag = digest
    return digest

