"""Swift's auth v1.0 on the object store: keys in, a token out, the token checked after.

``GET /auth/v1.0`` with ``X-Auth-User: <project>:<user>`` and ``X-Auth-Key: <secret
key>`` (or ``X-Storage-User``/``X-Storage-Pass``) answers 200 with ``X-Storage-Url:
http://<host>/v1/AUTH_<project>``, ``X-Auth-Token`` and ``X-Storage-Token`` (the same
token) and ``X-Auth-Token-Expires`` (seconds). The user and key are checked against the
credentials lookup the S3 side uses (``auth``): with the directory (``directory_lookup``)
``<user>`` is the user's name; with a table of keys (``dict_lookup``, ``novalab
objectstore --keys``), which has no names, it is the access key. ``<project>:`` may be
left out for the user's own project; the user acts for ``<project>`` under the same
rules as ``<access>:<project>`` in S3 (a member, or an admin for any project).

Every failure before the key is verified is one 401 with one message, so a caller who
does not hold the key learns nothing about users or projects.

Tokens live ``TOKEN_LIFETIME`` seconds in a table of at most ``MAX_TOKENS`` (the oldest
goes when it is full). A token names the access key, the project and a digest of the
secret it was issued against; each request asks the lookup again, so a deleted user, a
changed secret or a lost membership stops the token at once, as it stops S3 keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from real.objectstore.auth import Lookup
from real.objectstore.protocol import Caller, S3Error

#: Seconds a token is good for: a client re-authenticates after a 401 (python-swiftclient
#: does), and a token that leaks is worth an hour at most.
TOKEN_LIFETIME = 3600
#: Tokens held at once: each is a few hundred bytes, and a client that authenticates in a
#: loop must not grow the server without bound (the oldest is dropped first).
MAX_TOKENS = 10_000
#: The form of a token: the prefix tempauth uses, then 32 random hex digits.
TOKEN_PREFIX = "AUTH_tk"
ACCOUNT_PREFIX = "AUTH_"

UNAUTHORIZED = "the user and key do not match a user of this object store"


class Unauthorized(S3Error):
    """401: no token, an unknown or expired one, or credentials that do not hold."""

    def __init__(self, message: str = UNAUTHORIZED):
        super().__init__("Unauthorized", message)
        self.status = 401


@dataclass(frozen=True)
class Token:
    access: str
    project: str
    is_admin: bool
    secret_digest: bytes
    expires: float


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Tokens:
    """The table of issued tokens (bounded; thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.time, lifetime: float = TOKEN_LIFETIME,
                 limit: int = MAX_TOKENS):
        self.clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self._table: OrderedDict[str, Token] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, access: str, project: str, is_admin: bool, secret: str) -> tuple[str, Token]:
        token = TOKEN_PREFIX + secrets.token_hex(16)
        entry = Token(access, project, is_admin, _digest(secret), self.clock() + self.lifetime)
        with self._lock:
            self._table[token] = entry
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        return token, entry

    def get(self, token: str) -> Token | None:
        with self._lock:
            entry = self._table.get(token)
            if entry is not None and entry.expires <= self.clock():
                del self._table[token]
                entry = None
        return entry

    def discard(self, token: str) -> None:
        with self._lock:
            self._table.pop(token, None)

    def __len__(self) -> int:
        return len(self._table)


def _ask(lookup: Lookup, access: str, project: str) -> tuple | None:
    """The lookup's answer for ``access`` acting for ``project`` ('' = its own):
    (secret, project it may act for or None, is_admin), or None."""
    if getattr(lookup, "scoped", False):
        return lookup(access, project)
    found = lookup(access)
    if found is None:
        return None
    secret, own, is_admin = found
    if project and project != own and not is_admin:
        return secret, None, is_admin
    return secret, project or own, is_admin


def access_key_of(lookup: Lookup, user: str) -> str | None:
    """The access key of a user named ``user``: the directory's (``access_key_of``), or
    ``user`` itself for a lookup without names."""
    by_name = getattr(lookup, "access_key_of", None)
    return by_name(user) if by_name is not None else user


def sign_in(lookup: Lookup, tokens: Tokens, user_header: str, key: str) -> tuple[str, Token]:
    """Check ``X-Auth-User`` and ``X-Auth-Key`` and issue a token. Raises Unauthorized
    (or ServiceUnavailable when the directory does not answer)."""
    project, colon, user = user_header.partition(":")
    if not colon:
        project, user = "", user_header
    if not user or not key or len(user) > 256 or len(key) > 256:
        raise Unauthorized()
    access = access_key_of(lookup, user)
    found = _ask(lookup, access, project) if access else None
    if access is None or found is None or not hmac.compare_digest(_digest(found[0]), _digest(key)):
        raise Unauthorized()
    secret, acting, is_admin = found
    if not acting:
        raise Unauthorized(f"user {user!r} may not act for project {project!r}")
    return tokens.issue(access, acting, bool(is_admin), secret)


def caller_of(lookup: Lookup, tokens: Tokens, token: str) -> Caller:
    """The caller a token stands for, if its user, secret and project still hold."""
    entry = tokens.get(token) if token else None
    if entry is None:
        raise Unauthorized("the token is missing, unknown or expired: authenticate again")
    found = _ask(lookup, entry.access, entry.project)
    if found is None or found[1] != entry.project or not hmac.compare_digest(_digest(found[0]),
                                                                              entry.secret_digest):
        tokens.discard(token)
        raise Unauthorized("the token's credentials have changed: authenticate again")
    return Caller(entry.access, entry.project, bool(found[2]))


def account_project(account: str, caller: Caller) -> str:
    """The project of ``AUTH_<project>``, which the caller must act for (or be an admin)."""
    if not account.startswith(ACCOUNT_PREFIX) or len(account) == len(ACCOUNT_PREFIX):
        raise S3Error("NoSuchBucket", f"No account {account[:100]!r}: accounts are AUTH_<project>")
    project = account[len(ACCOUNT_PREFIX):]
    if project != caller.project and not caller.is_admin:
        raise S3Error("AccessDenied", f"the token is for project {caller.project!r}, not {project!r}")
    return project
