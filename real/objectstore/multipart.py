"""Multipart uploads on disk: parts beside their bucket until completed into one object.

An upload lives in ``<bucket>/.uploads/<upload id>/``: ``upload.json`` (key, owner,
content type, metadata, when it began) and one file per part, written like every
object (temporary file, fsync, rename), with ``<n>.json`` beside it (ETag, size).
Completing claims the directory by renaming it into ``<root>/.tmp`` (so a part
arriving meanwhile, an abort or a second complete sees NoSuchUpload), checks the
part list, copies the parts into one temporary file (the kernel's
``copy_file_range``, or bounded chunks) and renames that into place: a reader sees
the old object or the whole new one. A refused complete puts the directory back.

Limits (S3's where S3 has one): part numbers 1 to ``MAX_PARTS``; a part at most
``MAX_PART_SIZE`` and, but for the last, at least ``min_part_size``; at most
``max_uploads`` uploads in progress per bucket, because each holds disk space until
completed or aborted; an upload untouched for ``UPLOAD_LIFETIME`` is abandoned and
removed at the next upload started in its bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from real.objectstore.protocol import CHUNK, S3Error
from real.objectstore.store import DiskStore

UPLOADS_DIR = ".uploads"
#: S3's bounds on part numbers and part sizes.
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3
MIN_PART_SIZE = 5 * 1024**2
#: Uploads in progress per bucket: each holds disk space until it is completed or aborted.
MAX_UPLOADS_PER_BUCKET = 1000
#: Seconds an upload may go untouched before it counts as abandoned (and is removed).
UPLOAD_LIFETIME = 24 * 3600
#: Largest CompleteMultipartUpload body: 10,000 parts at about 150 bytes each, with room.
MAX_COMPLETE_BODY = 4 * 1024**2
#: Largest object a complete may assemble: 10,000 parts of 5 GiB would be 48 TiB of
#: disk; no image or file this testbed stores comes near 64 GiB.
MAX_OBJECT_SIZE = 64 * 1024**3

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "The specified multipart upload does not exist. The upload ID may be invalid, "
                   "or the upload may have been aborted or completed.", {"UploadId": upload_id[:64]},
                   close=True)  # a part's body may follow, unread


def part_number(value: str | None) -> int:
    """A ``partNumber`` query value, 1 to MAX_PARTS. Raises InvalidArgument."""
    try:
        number = int(value or "")
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive",
                      {"ArgumentName": "partNumber", "ArgumentValue": (value or "")[:20]}, close=True)
    return number


def parse_complete_body(body: bytes) -> list[tuple[int, str]]:
    """The ``(part number, ETag)`` list of a CompleteMultipartUpload body. Raises MalformedXML."""
    malformed = S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against "
                        "our published schema.")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:  # no entity expansion, ever
        raise malformed
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise malformed from None
    parts = []
    for part in root:
        if part.tag.rsplit("}", 1)[-1] != "Part":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in part}
        if "PartNumber" not in fields or "ETag" not in fields:
            raise malformed
        try:
            number = int(fields["PartNumber"])
        except ValueError:
            raise malformed from None
        parts.append((number, fields["ETag"].strip('"')))
    if root.tag.rsplit("}", 1)[-1] != "CompleteMultipartUpload" or not parts:
        raise malformed
    if len(parts) > MAX_PARTS:
        raise S3Error("InvalidArgument", f"At most {MAX_PARTS} parts make an object")
    return parts


class MultipartUploads:
    """The uploads of every bucket in ``store``."""

    def __init__(self, store: DiskStore, *, min_part_size: int = MIN_PART_SIZE,
                 max_uploads: int = MAX_UPLOADS_PER_BUCKET, lifetime: float = UPLOAD_LIFETIME):
        self.store = store
        self.min_part_size = min_part_size
        self.max_uploads = max_uploads
        self.lifetime = lifetime

    def _uploads(self, bucket: str) -> str:
        return os.path.join(self.store.bucket_dir(bucket), UPLOADS_DIR)

    def directory(self, bucket: str, key: str, upload_id: str) -> str:
        """The directory of a live upload of ``key``. Raises NoSuchUpload."""
        if not _UPLOAD_ID.match(upload_id):
            raise no_such_upload(upload_id)
        path = os.path.join(self._uploads(bucket), upload_id)
        info = self._info(path)
        if info is None or info["key"] != key:
            raise no_such_upload(upload_id)
        return path

    @staticmethod
    def _info(path: str) -> dict | None:
        try:
            with open(os.path.join(path, "upload.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # -- create, abort, list ------------------------------------------------------------

    def create(self, bucket: str, key: str, content_type: str, user_meta: dict) -> str:
        uploads = self._uploads(bucket)
        os.makedirs(uploads, exist_ok=True)
        self._sweep_abandoned(uploads)
        if len(os.listdir(uploads)) >= self.max_uploads:
            raise S3Error("TooManyUploads", f"The bucket has {self.max_uploads} multipart uploads in progress, the "
                          "most this store allows: complete or abort some first")
        upload_id = uuid.uuid4().hex
        staging = tempfile.mkdtemp(prefix="upload-", dir=self.store.tmp)
        self.store.write_json(os.path.join(staging, "upload.json"), {
            "key": key, "upload_id": upload_id, "initiated": self.store.clock(), "content_type": content_type,
            "meta": user_meta})
        with self.store.lock:
            self.store.bucket_info(bucket)  # not deleted meanwhile
            os.rename(staging, os.path.join(uploads, upload_id))
        return upload_id

    def _sweep_abandoned(self, uploads: str):
        cutoff = time.time() - self.lifetime
        for name in os.listdir(uploads):
            path = os.path.join(uploads, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    self._discard(path)
            except OSError:
                pass

    def _discard(self, path: str):
        grave = os.path.join(self.store.tmp, f"aborted-{uuid.uuid4().hex}")
        with self.store.lock:
            os.rename(path, grave)
        shutil.rmtree(grave, ignore_errors=True)

    def abort(self, bucket: str, key: str, upload_id: str):
        try:
            self._discard(self.directory(bucket, key, upload_id))
        except FileNotFoundError:  # aborted or completed by another request just now
            raise no_such_upload(upload_id) from None

    def parts(self, path: str) -> list[dict]:
        """The parts of an upload directory, by number."""
        found = []
        for name in os.listdir(path):
            if name.endswith(".json") and name != "upload.json":
                try:
                    with open(os.path.join(path, name)) as f:
                        found.append(json.load(f))
                except (OSError, ValueError):
                    continue
        return sorted(found, key=lambda p: p["number"])

    def uploads(self, bucket: str) -> Iterator[dict]:
        """Every upload in progress in ``bucket``: its upload.json."""
        uploads = self._uploads(bucket)
        try:
            names = os.listdir(uploads)
        except FileNotFoundError:
            return
        for name in names:
            info = self._info(os.path.join(uploads, name))
            if info is not None:
                yield info

    # -- parts ----------------------------------------------------------------------------

    def put_part(self, bucket: str, key: str, upload_id: str, number: int, chunks, check) -> tuple[str, int]:
        """Write part ``number`` from ``chunks`` (``check()`` verifies them once read). -> (etag, size)."""
        self.directory(bucket, key, upload_id)
        md5 = hashlib.md5()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix="part-", dir=self.store.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    md5.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            check()
            etag = md5.hexdigest()
            with self.store.lock:
                path = self.directory(bucket, key, upload_id)  # not aborted or completed meanwhile
                os.replace(tmp, os.path.join(path, f"{number:05d}"))
                self.store.write_json(os.path.join(path, f"{number:05d}.json"),
                                      {"number": number, "etag": etag, "size": size, "mtime": self.store.clock()})
                os.utime(path)  # touched: not abandoned
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return etag, size

    # -- complete -------------------------------------------------------------------------

    def complete(self, bucket: str, key: str, upload_id: str, wanted: list[tuple[int, str]],
                 data: str, meta_path: str, still_owned) -> str:
        """Assemble the ``wanted`` parts into the object at ``data``; -> its ETag.
        ``still_owned()`` is called under the store's lock just before the rename."""
        path = self.directory(bucket, key, upload_id)
        claimed = os.path.join(self.store.tmp, f"completing-{upload_id}")
        with self.store.lock:
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                raise no_such_upload(upload_id) from None
        fd, tmp = -1, ""
        try:
            info = self._info(claimed) or {}
            chosen = self._check_parts(self.parts(claimed), wanted)
            fd, tmp = tempfile.mkstemp(prefix="complete-", dir=self.store.tmp)
            with os.fdopen(fd, "wb") as out:
                for part in chosen:
                    with open(os.path.join(claimed, f"{part['number']:05d}"), "rb") as source:
                        _copy(source, out, part["size"])
                out.flush()
                os.fsync(out.fileno())
            digest = hashlib.md5(b"".join(bytes.fromhex(p["etag"]) for p in chosen)).hexdigest()
            etag = f"{digest}-{len(chosen)}"
            with self.store.lock:
                still_owned()
                os.replace(tmp, data)
                st = os.stat(data)
                self.store.write_json(meta_path, {"key": key, "etag": etag, "size": st.st_size,
                                                  "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
                                                  "content_type": info.get("content_type", "binary/octet-stream"),
                                                  "meta": info.get("meta", {})})
        except BaseException:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            with self.store.lock:  # refused: the upload is still there to be fixed or aborted
                try:
                    os.rename(claimed, path)
                except OSError:
                    shutil.rmtree(claimed, ignore_errors=True)
            raise
        shutil.rmtree(claimed, ignore_errors=True)
        return etag

    def _check_parts(self, stored: list[dict], wanted: list[tuple[int, str]]) -> list[dict]:
        by_number = {p["number"]: p for p in stored}
        numbers = [n for n, _ in wanted]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered "
                          "by part number.")
        chosen = []
        for number, etag in wanted:
            part = by_number.get(number)
            if part is None or part["etag"] != etag:
                raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may "
                              "not have been uploaded, or the specified entity tag may not match the part's entity "
                              "tag.", {"PartNumber": str(number), "ETag": etag[:64]})
            chosen.append(part)
        for part in chosen[:-1]:
            if part["size"] < self.min_part_size:
                raise S3Error("EntityTooSmall", f"Your proposed upload is smaller than the minimum allowed size: "
                              f"part {part['number']} is {part['size']} bytes; every part but the last must be at "
                              f"least {self.min_part_size}", {"PartNumber": str(part["number"]),
                                                               "MinSizeAllowed": str(self.min_part_size)})
        total = sum(p["size"] for p in chosen)
        if total > MAX_OBJECT_SIZE:
            raise S3Error("EntityTooLarge", f"The parts add up to {total} bytes, more than the {MAX_OBJECT_SIZE} "
                          "this store allows in one object", {"MaxSizeAllowed": str(MAX_OBJECT_SIZE)})
        return chosen


def _copy(source, out, size: int):
    """Copy ``size`` bytes from the start of ``source`` to the end of ``out``: in the
    kernel when it can, else in CHUNK pieces (memory stays flat either way)."""
    out.flush()
    copied = 0
    try:
        while copied < size:
            done = os.copy_file_range(source.fileno(), out.fileno(), min(size - copied, 1 << 30), copied)
            if done == 0:
                break
            copied += done
    except OSError:
        if copied:
            raise
        source.seek(0)
        while copied < size:
            chunk = source.read(min(CHUNK, size - copied))
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)
    out.seek(0, os.SEEK_END)
    if copied != size:
        raise OSError(f"a part is {copied} bytes on disk, not the {size} recorded")
