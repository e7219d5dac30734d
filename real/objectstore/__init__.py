"""An S3-compatible object store, with the Swift API beside it: buckets and objects on
disk, behind AWS signatures or Swift tokens.

The 2010 ``nova-objectstore`` (twisted.web on port 3333) rebuilt as a WSGI application
(``ObjectStoreApp``) served by cheroot. boto3's S3 client works against it unmodified,
and so does python-swiftclient: the Swift (Cloud Files) API on the same port and the
same buckets is ``swift`` (its docstring says what it serves).
``serve(app, host, port)`` runs it in the foreground until SIGTERM/SIGINT;
``ObjectStoreServer(root, lookup, host, port)`` runs it on a background thread (tests,
daemons); ``auth.dict_lookup``/``auth.file_lookup`` make a credentials lookup from a table.
Modules: ``app`` (the WSGI application), ``store`` (the on-disk store), ``objects``
(reading an object and listing keys, for both APIs), ``multipart`` (uploads in parts),
``protocol`` (S3 errors, names, XML, ranges, conditions, request bodies), ``auth``
(signatures and the lookups), ``server`` (cheroot); ``swift``, ``swift_auth``,
``swift_objects`` and ``swift_large`` (the Swift API, its tokens, its object requests
and its large objects).

Why cheroot (CherryPy's server, pure Python, maintained): it hands the request body to
the application as a stream, so an upload is written once, into our own temporary file,
under our own bound (waitress spools every body to a temporary file of its own before
calling the application, which for multi-GB images means writing each twice, outside
``root``); it has a thread-safe ``stop()`` and binds before serving, so a background
server on a free port is a few lines; and it passes the raw request target
(``REQUEST_URI``) that Signature V4 signs.

*Features*

- Path-style S3 REST: ListBuckets (``GET /``); CreateBucket, HeadBucket, DeleteBucket
  (refused with BucketNotEmpty while it holds objects); ListObjects v1 (``prefix``,
  ``marker``, ``max-keys`` up to 1000, ``delimiter``, ``IsTruncated``/``NextMarker``) and
  v2 (``list-type=2``, ``continuation-token``, ``start-after``), ``encoding-type=url``;
  PutObject, GetObject, HeadObject, DeleteObject (204 also when the key is absent).
- Ranged GET: ``Range: bytes=a-b``, ``a-`` and ``-n`` answer 206 with ``Content-Range``;
  a range past the end is 416 InvalidRange with ``Content-Range: bytes */<size>``;
  several ranges, or an ``If-Range`` naming another version, get the whole object (200).
- Conditional GET and HEAD: If-Match and If-Unmodified-Since (412 PreconditionFailed),
  If-None-Match and If-Modified-Since (304), with S3's precedence between them.
- Multipart upload (``multipart``): CreateMultipartUpload, UploadPart, UploadPartCopy,
  CompleteMultipartUpload (ETag ``"<MD5 of the parts' MD5s>-<parts>"``; InvalidPartOrder,
  InvalidPart, EntityTooSmall), AbortMultipartUpload, ListParts, ListMultipartUploads.
  Bounds: part numbers 1-10,000, parts up to 5 GiB and (but the last) at least 5 MiB,
  as S3; 1,000 uploads in progress per bucket and 24 hours untouched before an upload
  is abandoned, because each holds disk space; 64 GiB per assembled object.
- CopyObject (``x-amz-copy-source``, ``x-amz-metadata-directive`` COPY or REPLACE), up
  to ``max_body``; larger objects are copied part by part, as S3 requires.
- Bodies stream to and from disk in 64 KiB pieces, so a server's memory does not grow
  with the size of what it stores or serves.
- ``ETag`` = the quoted MD5 hex of the body, ``Content-Length``, ``Last-Modified``; the
  ``Content-Type`` and ``x-amz-meta-*`` headers of a PUT are kept and served back.
- Errors are S3 error XML with S3's codes and statuses, those of the HTTP server
  included (oversized headers, malformed request lines or ``Content-Length``:
  real.httpserver); unknown subresources (``?name`` without a value) are
  InvalidRequest, known ones we do not serve NotImplemented: NoSuchBucket, NoSuchKey,
  BucketAlreadyOwnedByYou, BucketAlreadyExists, BucketNotEmpty, AccessDenied,
  SignatureDoesNotMatch, InvalidAccessKeyId, RequestTimeTooSkewed, InvalidBucketName,
  KeyTooLongError, EntityTooLarge, BadDigest, XAmzContentSHA256Mismatch, NotImplemented...
- Authentication: AWS Signature Version 4 in the ``Authorization`` header, as boto3
  sends it, or in the query (pre-signed URLs: ``X-Amz-Algorithm``, ``X-Amz-Credential``,
  ``X-Amz-Date``, ``X-Amz-Expires`` up to seven days, ``X-Amz-SignedHeaders``,
  ``X-Amz-Signature``); S3's Signature Version 2 in the header (``AWS access:sig``) or
  the query (``AWSAccessKeyId``, ``Expires``, at most seven days ahead, ``Signature``).
  A URL past its expiry is AccessDenied "Request has expired". The payload hash in ``x-amz-content-sha256`` is checked against the body
  (a mismatch stores nothing); ``UNSIGNED-PAYLOAD`` is accepted; ``Content-MD5`` and
  ``x-amz-checksum-crc32`` are verified when sent. A request whose ``x-amz-date`` (or
  ``Date``) is more than 15 minutes from the server's clock, either way, is refused
  with RequestTimeTooSkewed, which bounds how long a captured request can be replayed.
- Credentials come from ``lookup(access_key) -> (secret_key, project, is_admin) | None``.
  The EC2 form ``<access>:<project>`` is accepted as well as plain ``<access>``: the
  lookup is asked about ``<access>``; the caller acts for ``<project>`` when it is the
  key's own project (or empty), and for any project when the key is an admin's.
  A *scoped* lookup (``lookup.scoped`` true) is asked ``lookup(access, project)`` and
  answers with the project the key may act for in this request (None: not that one):
  ``directory_lookup`` is one, over the LDAP directory, where a user belongs to many
  projects (``<access>:<project>`` acts for ``<project>`` when the user is a member;
  plain ``<access>`` for the user's own project, named like the user). The lookup is
  made before the signature is checked, but its answer is used only after.
- Ownership: a bucket belongs to the project of whoever created it; every request on it
  from another project is AccessDenied unless the caller is an admin. ListBuckets shows
  the caller's project's buckets (an admin's: all). ``x-amz-expected-bucket-owner:
  <project>`` makes a request on a bucket of any other project AccessDenied, admins'
  included (the EC2 API registers an image only from a bucket of the caller's project).
- Names: buckets S3 creates follow S3's rules (3-63 of ``a-z0-9.-``, letter or digit at
  both ends, no ``..``, not an IPv4 address); a Swift container may also be 1-255 of
  ``A-Za-z0-9._-`` starting with a letter or digit (``photos_segments``), and S3
  reaches it by that name; keys are at most 1024 UTF-8 bytes, without
  control characters and without ``.`` or ``..`` path segments (so no intermediary that
  normalises URLs can turn ``/b/../x`` into another resource). A key is stored as one
  percent-escaped file name, so no key can name a path outside its bucket's directory.
- Atomic writes: a body goes to a temporary file under ``<root>/.tmp``, is fsynced and
  verified, then renamed into place; a reader sees the old object or the new one, never
  a part. Buckets appear and disappear by a directory rename too.
- Bounded request bodies (``max_body``, default 5 GiB, S3's own single-PUT limit): the
  store writes every body to disk, so an unbounded one could fill the disk (a runaway
  or hostile client); larger bodies are EntityTooLarge before a byte is read. Bodies of
  bucket requests are held in memory and bounded at 1 MiB.

On disk (``root``)::

    <root>/<bucket>/.bucket.json           {"owner": <project>, "created": <epoch>, "swift_meta"}
    <root>/<bucket>/<escaped key>          the object's bytes, as uploaded
    <root>/<bucket>/.meta/<escaped key>    {"etag", "size", "mtime_ns", "ino", ...; a Swift
                                           manifest's "manifest", "slo_*" or "dlo"}
    <root>/<bucket>/.uploads/<upload id>/  a multipart upload: upload.json, parts 00001...
    <root>/.tmp/                           uploads in flight (same filesystem: rename is atomic)

The ``.meta`` record is trusted only while the data file's inode, size and mtime match
it; otherwise the MD5 is recomputed (after a crash between the two renames, or a file
replaced by hand).

*Not supported*: versioning, ACL, policy, CORS, lifecycle, tagging and every other
``?subresource`` (NotImplemented), GET of one part (``?partNumber`` without
``?uploadId``), the ``x-amz-copy-source-if-*`` conditions, DeleteObjects (batch),
signed or unsigned streaming (``aws-chunked``) payloads, anonymous access,
virtual-hosted-style addressing, server-side encryption, storage classes, keys whose
escaped form is over 240 characters (each UTF-8 byte outside ``A-Za-z0-9_.-~`` counts
three; KeyTooLongError), more than one server process per root, and the 2010 ``/_images``
endpoints (images are registered in the datastore: common/images.py).

*Connection string*: ``http://HOST:PORT`` (default ``http://127.0.0.1:3333``) as boto3's
``endpoint_url``, with path-style addressing (automatic for an IP address; set
``Config(s3={"addressing_style": "path"})`` for a host name), any region name, and
``aws_access_key_id="<access>:<project>"``, ``aws_secret_access_key="<secret>"``.
"""

from real.objectstore.app import ObjectStoreApp
from real.objectstore.server import ObjectStoreServer, serve

__all__ = ["ObjectStoreApp", "ObjectStoreServer", "serve"]
