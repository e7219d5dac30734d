"""The real directory: ldap3 against an LDAP server (OpenLDAP slapd with the nova schema).

``LdapDirectory`` performs the directory effects of ``common.effects`` (``LdapSearch``,
``LdapAdd``, ``LdapModify``, ``LdapDelete``) and gives exactly the Python values
``sim.directory.SimDirectory`` gives, so ``common.directory.Directory`` runs unchanged
on either.

*Features*

- The four effects with the contract's results: a search returns a tuple of ``(dn,
  {attr: tuple of str})`` sorted by DN, with attribute names spelled as requested, and
  is empty when the base does not exist; an add returns True; a modify returns True,
  or False when the entry does not exist; a delete returns True, or False when there
  was nothing to delete.
- Server answers become the errors the managers know: ``entryAlreadyExists`` and
  ``attributeOrValueExists`` -> DirectoryConflict, and so are a modify that would
  break the entry's object class (``objectClassViolation``, e.g. a group's last
  member) and deleting an entry with children (``notAllowedOnNonLeaf``);
  ``noSuchAttribute`` (deleting a value that is not there) and an add below a missing
  parent -> NotFound; other refusals -> InvalidParameterValue.
- Unreachable, slow, busy or refusing-our-bind servers -> DirectoryUnavailable naming
  the URL (never the password), within ``timeout`` seconds per round trip (connect;
  the receive timeout is rounded up to whole seconds, as ldap3 sets it). The failed
  connection is dropped; the next effect connects afresh, so a restarted server is
  picked up without restarting the client.
- Thread-safe: one connection per thread (ldap3 connections are not safe to share),
  and no lock is held across a round trip (reliability E2). ``close()`` unbinds all.
- Searches below a base use the simple paged results control (1000 per page), so a
  server's size limit does not truncate ``list_users``.
- TLS: ``ldaps://`` from the first byte, or StartTLS (``starttls=True``) on an
  ``ldap://`` URL before the bind. Either way the server's certificate must chain to
  ``ca_file`` (PEM; none: the system's trusted CAs) and name the URL's host; a server
  that fails that, or refuses StartTLS, is DirectoryUnavailable (the password is never
  sent).
- ``from_config(config)``: the directory a daemon configuration describes: the nova
  schema below ``ldap_root``, or an existing tree through ``ldap_map``
  (``common.mapped_directory``), with its LdapDirectory.
- ``run(gen)``: a minimal blocking driver for generators that yield only directory
  effects (``novalab manage``, ``PrivateSlapd`` set-up); ``install(runtime, ...)``
  registers the performer with a ``RealRuntime``.

*Not supported*

- Silent retries: a failed round trip raises DirectoryUnavailable and the caller
  decides; after a timeout an add or modify may or may not have happened.
- SASL and client certificates: simple bind only.
- Referrals (not followed), aliases (never dereferenced), server-side sorting, LDAP
  transactions: each effect is one operation, atomic only as the server makes it.
- Server pools and failover: one URL.

*Connection string*

``ldap://host[:port][/]`` (default port 389), ``ldaps://host[:port][/]`` (636), or
``ldapi://%2Fpath%2Fto%2Fsocket``; the bind DN and password are separate arguments
(``cn=admin,dc=novalab,dc=local`` for ``real.slapd.PrivateSlapd``).
"""

from __future__ import annotations

import math
import os
import ssl
import threading
from urllib.parse import urlsplit

from ldap3 import (
    BASE,
    LEVEL,
    MODIFY_ADD,
    MODIFY_DELETE,
    MODIFY_REPLACE,
    NONE,
    SIMPLE,
    SUBTREE,
    SYNC,
    Connection,
    Server,
    Tls,
)
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPResponseTimeoutError

from common.driving import run_blocking
from common.effects import DirectoryEffect, LdapAdd, LdapDelete, LdapModify, LdapSearch
from common.errors import DirectoryConflict, DirectoryUnavailable, InvalidParameterValue, NotFound, NovaError

_SCOPES = {"base": BASE, "level": LEVEL, "subtree": SUBTREE}
_OPS = {"add": MODIFY_ADD, "delete": MODIFY_DELETE, "replace": MODIFY_REPLACE}
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_PAGE = 1000

# Result codes (RFC 4511 appendix A).
SUCCESS = 0
TIME_LIMIT_EXCEEDED = 3
NO_SUCH_ATTRIBUTE = 16
ATTRIBUTE_OR_VALUE_EXISTS = 20
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS_RIGHTS = 50
BUSY = 51
UNAVAILABLE = 52
OBJECT_CLASS_VIOLATION = 65
NOT_ALLOWED_ON_NON_LEAF = 66
ENTRY_ALREADY_EXISTS = 68
_UNAVAILABLE_CODES = {TIME_LIMIT_EXCEEDED, INVALID_CREDENTIALS, INSUFFICIENT_ACCESS_RIGHTS, BUSY, UNAVAILABLE, 80}


def _redact(url: str) -> str:
    """``url`` without any user information."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return parts._replace(netloc=host).geturl()
    return url


class LdapDirectory:
    """A ``common.performers.DirectoryPerformer`` against the server at ``url``."""

    def __init__(self, url: str, bind_dn: str, password: str, timeout: float = 5, *, starttls: bool = False,
                 ca_file: str | None = None):
        self.url = _redact(url)
        self.bind_dn = bind_dn
        self._password = password
        self.timeout = timeout
        self.starttls = starttls
        if ca_file is not None and not os.access(ca_file, os.R_OK):
            raise DirectoryUnavailable(f"LDAP at {self.url}: the CA file {ca_file} cannot be read")
        try:
            self._server = self._make_server(url, timeout, starttls, ca_file)
        except (LDAPException, ValueError) as e:
            raise DirectoryUnavailable(f"LDAP at {self.url}: not a usable LDAP URL ({e})") from None
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()  # guards the list of connections only
        self.operations = 0

    @staticmethod
    def _make_server(url: str, timeout: float, starttls: bool, ca_file: str | None) -> Server:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if starttls and scheme != "ldap":
            raise ValueError("StartTLS is for ldap:// URLs (ldaps:// is TLS already)")
        if scheme == "ldapi":
            return Server(url.rstrip("/"), get_info=NONE, connect_timeout=timeout)
        if scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError("expected ldap://host[:port]/, ldaps://host[:port]/ or ldapi://socket")
        if parts.path.strip("/") or parts.query:
            raise ValueError("a base DN, attributes or filter in the URL are not supported")
        tls = None
        if scheme == "ldaps" or starttls:
            # Verified, name included: a directory that cannot prove who it is gets no password.
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        return Server(parts.hostname, port=parts.port or (636 if scheme == "ldaps" else 389),
                      use_ssl=scheme == "ldaps", tls=tls, get_info=NONE, connect_timeout=timeout)

    # -- connections ----------------------------------------------------------------

    def _connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        conn = Connection(self._server, user=self.bind_dn, password=self._password, authentication=SIMPLE,
                          client_strategy=SYNC, raise_exceptions=False,
                          receive_timeout=max(1, math.ceil(self.timeout)),  # ldap3 packs it as whole seconds
                          auto_referrals=False, read_only=False)
        try:
            if self.starttls:
                conn.open()
                if not conn.start_tls(read_server_info=False):
                    raise LDAPException(f"StartTLS refused: {(conn.result or {}).get('description', '')}")
            bound = conn.bind()
        except (LDAPException, ssl.SSLError, OSError) as e:
            self._discard(conn)
            raise DirectoryUnavailable(f"LDAP at {self.url} is not answering: {e}") from None
        if not bound:
            description = conn.result.get("description", "") if conn.result else ""
            self._discard(conn)
            raise DirectoryUnavailable(f"LDAP at {self.url} refused the bind as {self.bind_dn}: {description}")
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def _discard(self, conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.unbind()
        except Exception:  # the socket is already gone: nothing to tell the server
            pass

    def close(self) -> None:
        """Unbind every thread's connection."""
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            try:
                conn.unbind()
            except Exception:  # closing during shutdown: nothing left to do with it
                pass
        self._local = threading.local()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- performing ---------------------------------------------------------------

    def perform(self, agent, effect):
        """Perform one directory effect (blocking) and return its result."""
        kind = type(effect)
        handler = {LdapSearch: self._search, LdapAdd: self._add, LdapModify: self._modify,
                   LdapDelete: self._delete}.get(kind)
        if handler is None:
            raise TypeError(f"not a directory effect: {effect!r}")
        conn = self._connection()
        self.operations += 1
        try:
            return handler(conn, effect)
        except (LDAPCommunicationError, LDAPResponseTimeoutError, OSError) as e:
            self._discard(conn)
            raise DirectoryUnavailable(f"LDAP at {self.url} failed during {kind.__name__}: {e or type(e).__name__}") from None
        except NovaError:
            raise
        except LDAPException as e:  # ldap3 refused the request itself (bad DN, filter or value)
            raise InvalidParameterValue(f"LDAP at {self.url} cannot send {kind.__name__}: {e}") from None

    def run(self, gen, agent=None):
        """Drive a generator that yields only directory effects; return its value."""
        return run_blocking(gen, lambda effect: self.perform(agent, effect))

    def _fail(self, conn, what: str, dn: str):
        result = conn.result or {}
        code = result.get("result", -1)
        text = f"{result.get('description', '')} {result.get('message', '')}".strip()
        if code in (ENTRY_ALREADY_EXISTS, ATTRIBUTE_OR_VALUE_EXISTS, NOT_ALLOWED_ON_NON_LEAF):
            raise DirectoryConflict(f"{what} {dn}: {text}")
        if code == OBJECT_CLASS_VIOLATION and what == "modify":
            raise DirectoryConflict(f"{what} {dn}: {text}")
        if code in (NO_SUCH_ATTRIBUTE, NO_SUCH_OBJECT):
            raise NotFound(f"{what} {dn}: {text}")
        if code in _UNAVAILABLE_CODES:
            self._discard(conn)
            raise DirectoryUnavailable(f"LDAP at {self.url} could not {what} {dn}: {text}")
        raise InvalidParameterValue(f"LDAP at {self.url} refused to {what} {dn}: {text}")

    def _search(self, conn, effect: LdapSearch):
        scope = _SCOPES.get(effect.scope)
        if scope is None:
            raise ValueError(f"LdapSearch scope must be base, level or subtree, not {effect.scope!r}")
        requested = list(effect.attributes) or ["*"]
        spelling = {name.lower(): name for name in effect.attributes}
        out = []
        cookie = None
        while True:
            paged = {} if scope == BASE else {"paged_size": _PAGE, "paged_cookie": cookie}
            conn.search(effect.base, effect.filter, scope, attributes=requested, **paged)
            code = (conn.result or {}).get("result", -1)
            if code == NO_SUCH_OBJECT:
                return ()
            if code != SUCCESS:
                self._fail(conn, "search", effect.base)
            for item in conn.response or ():
                if item.get("type") != "searchResEntry":
                    continue
                attrs = {}
                for name, values in item.get("raw_attributes", {}).items():
                    if values:
                        attrs[spelling.get(name.lower(), name)] = tuple(
                            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
                out.append((item["dn"], attrs))
            controls = (conn.result or {}).get("controls") or {}
            cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie")
            if scope == BASE or not cookie:
                break
        return tuple(sorted(out, key=lambda entry: entry[0]))

    def _add(self, conn, effect: LdapAdd):
        attrs = {name: list(values) for name, values in effect.attributes.items() if values}
        if conn.add(effect.dn, list(effect.object_classes), attrs):
            return True
        code = (conn.result or {}).get("result", -1)
        if code == NO_SUCH_OBJECT:
            raise NotFound(f"cannot add {effect.dn}: its parent does not exist")
        self._fail(conn, "add", effect.dn)

    def _modify(self, conn, effect: LdapModify):
        changes: dict = {}
        for op, attr, values in effect.changes:
            if op not in _OPS:
                raise ValueError(f"LdapModify op must be add, delete or replace, not {op!r}")
            changes.setdefault(attr, []).append((_OPS[op], list(values)))
        if conn.modify(effect.dn, changes):
            return True
        code = (conn.result or {}).get("result", -1)
        if code == NO_SUCH_OBJECT:
            return False
        self._fail(conn, "modify", effect.dn)

    def _delete(self, conn, effect: LdapDelete):
        if conn.delete(effect.dn):
            return True
        if (conn.result or {}).get("result", -1) == NO_SUCH_OBJECT:
            return False
        self._fail(conn, "delete", effect.dn)


def install(runtime, url: str, bind_dn: str, password: str, timeout: float = 5, **tls) -> LdapDirectory:
    """Give ``runtime`` (a RealRuntime) a directory at ``url``; returns the
    LdapDirectory (close it when the runtime stops). ``tls``: ``starttls``, ``ca_file``."""
    directory = LdapDirectory(url, bind_dn, password, timeout, **tls)
    runtime.register(DirectoryEffect, directory)
    return directory


def from_config(config):
    """-> (directory, LdapDirectory) of a real.config.DaemonConfig: a
    common.directory.Directory below ``ldap_root`` (the nova schema), or a
    common.mapped_directory.MappedDirectory over ``ldap_map`` (an existing tree); the
    LdapDirectory binds as ``ldap_bind_dn`` (none: ``cn=admin,<ldap_root>``), over
    ``ldap_starttls``/``ldap_ca_file`` TLS. Raises DirectoryUnavailable for an unusable
    URL or CA file, ValueError for a bad root."""
    from common.directory import Directory
    from common.mapped_directory import MappedDirectory

    directory = MappedDirectory(config.ldap_map) if config.ldap_map is not None else Directory(config.ldap_root)
    ldap = LdapDirectory(config.ldap_url, config.ldap_bind_dn or f"cn=admin,{config.ldap_root}",
                         config.ldap_password, config.ldap_timeout, starttls=config.ldap_starttls,
                         ca_file=config.ldap_ca_file)
    return directory, ldap
