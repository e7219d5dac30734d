"""The object store on disk: buckets as directories, objects as files, metadata beside them.

The layout and its guarantees (atomic writes by rename, ``.meta`` trusted only while
it matches its data file) are in the package docstring. Every commit (a rename into
place, a delete, a bucket created or removed) holds ``lock``, so a bucket cannot be
deleted between an upload's check and its rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable

from real.objectstore.protocol import (
    BUCKET_META,
    CHUNK,
    META_DIR,
    TMP_DIR,
    S3Error,
    key_file_name,
    validate_bucket_name,
)


class DiskStore:
    """Buckets and objects under ``root``; ``clock`` stamps bucket creation."""

    def __init__(self, root, clock: Callable[[], float] = time.time):
        self.root = os.path.abspath(os.fspath(root))
        self.clock = clock
        self.tmp = os.path.join(self.root, TMP_DIR)
        os.makedirs(self.tmp, exist_ok=True)
        self.lock = threading.Lock()
        self.sweep_tmp()

    def bucket_dir(self, bucket: str) -> str:
        return os.path.join(self.root, validate_bucket_name(bucket))

    def bucket_info(self, bucket: str) -> dict:
        try:
            with open(os.path.join(self.bucket_dir(bucket), BUCKET_META)) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket}) from None

    def paths(self, bucket: str, key: str) -> tuple[str, str, str]:
        directory = self.bucket_dir(bucket)
        name = key_file_name(key)
        data = os.path.join(directory, name)
        # Defence in depth: the escaped name has no separator, so this always holds.
        if os.path.dirname(data) != directory or name in (".", ".."):
            raise S3Error("InvalidArgument", f"The object key {key!r} is not acceptable")
        return directory, data, os.path.join(directory, META_DIR, name)

    def object_meta(self, directory: str, key: str, f=None) -> dict | None:
        """The object's metadata, trusted only if it matches the data file (``f`` if
        open, else the path); the MD5 is recomputed when it does not. None: no object."""
        name = key_file_name(key)
        data = os.path.join(directory, name)
        try:
            st = os.fstat(f.fileno()) if f is not None else os.stat(data)
        except FileNotFoundError:
            return None
        meta_path = os.path.join(directory, META_DIR, name)
        try:
            with open(meta_path) as m:
                meta = json.load(m)
        except (OSError, ValueError):
            meta = {}
        if (meta.get("ino"), meta.get("size"), meta.get("mtime_ns")) == (st.st_ino, st.st_size, st.st_mtime_ns):
            return meta
        md5 = hashlib.md5()
        try:
            source = f if f is not None else open(data, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            return None
        try:
            source.seek(0)
            for chunk in iter(lambda: source.read(CHUNK), b""):
                md5.update(chunk)
            source.seek(0)
        finally:
            if f is None:
                source.close()
        meta = {**meta, "key": key, "etag": md5.hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ino": st.st_ino}
        with self.lock:  # record it only if the file is still the one we hashed
            try:
                now = os.stat(data)
                if (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
                    self.write_json(meta_path, meta)
            except OSError:  # replaced, deleted or its bucket gone: the answer is still right
                pass
        return meta

    def write_json(self, path: str, value: dict):
        fd, tmp = tempfile.mkstemp(prefix="meta-", dir=self.tmp)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(value, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def sweep_tmp(self, older_than: float = 3600.0):
        """Remove uploads left by a crashed server (old enough not to be in flight)."""
        cutoff = time.time() - older_than
        for name in os.listdir(self.tmp):
            path = os.path.join(self.tmp, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
            except OSError:
                pass
