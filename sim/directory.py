"""The simulated directory: the four LDAP effects on ldap3's MOCK_SYNC server.

One ``SimDirectory`` per run holds one fake server (an in-memory DIT owned by ldap3's
mock strategy) seeded with the root, ``ou=Users`` and ``ou=Groups``. ``perform(agent,
effect)`` is a SimPy generator: it applies the effect at once, then waits a latency
drawn from the distribution it was given (with the run's stream for it), so every
directory round trip is a scheduling point, as on a real server.

What it does model, so that the contract tests pass against it and OpenLDAP alike:
equality filters with RFC 4515 escapes (the mock parses ``\\2a`` as a literal star and
matches case-insensitively, like ``caseIgnoreMatch``), search scopes with results
sorted by DN and attribute names spelled as requested, ``entryAlreadyExists`` on add,
a missing parent on add, ``attributeOrValueExists`` when a modify adds a value that is
there, ``noSuchAttribute`` when it deletes one that is not, removing the last
``member`` of a ``groupOfNames`` (``objectClassViolation``), and deleting an entry that
still has children (``notAllowedOnNonLeaf``); the errors are the ones
``real.directory`` raises for the same server answers.

What it does not model:

- Schema: no checks beyond ldap3's own (none: it runs without a schema). Unknown
  attributes or object classes, missing MUST attributes, SINGLE-VALUE and value
  syntaxes (``isAdmin`` being ``TRUE``/``FALSE``) are not enforced; objectClass
  filters match only the classes an entry was written with (no superclass walk).
- Matching rules: every equality is ldap3's (case-insensitive; digit strings compare
  as numbers), substring and ordering filters are ldap3's approximation; DN values are
  compared as normalised strings, not by ``distinguishedNameMatch``.
- Failures: none unless injected. Set ``available = False`` to make every effect wait
  its latency and raise DirectoryUnavailable (reliability E2); nothing else fails
  (no size or time limits, no referrals, no access control: every operation runs as
  the root DN).
- A modify's checks look at the entry as it was before the modify, not between its
  changes; the mock applies the changes atomically.
- Persistence, replication, and the cost of a search (the mock scans the whole DIT;
  the latency drawn is the only time that passes).
"""

from __future__ import annotations

from typing import Any

from ldap3 import BASE, LEVEL, MOCK_SYNC, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, NONE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import safe_dn

from common.directory import Directory
from common.effects import DirectoryEffect, LdapAdd, LdapDelete, LdapModify, LdapSearch
from common.errors import DirectoryConflict, DirectoryUnavailable, InvalidParameterValue, NotFound
from common.ldap_escaping import split_first_rdn

_SCOPES: dict[str, Any] = {"base": BASE, "level": LEVEL, "subtree": SUBTREE}
_OPS = {"add": MODIFY_ADD, "delete": MODIFY_DELETE, "replace": MODIFY_REPLACE}
_GROUP_CLASSES = {"groupofnames", "novaproject"}


def _norm(dn: str) -> str:
    return dn.replace(" ", "").lower()


class SimDirectory:
    """An in-memory LDAP server for one run; a ``common.performers.DirectoryPerformer``."""

    def __init__(self, env, latency, rng, root: str = "dc=novalab,dc=local", seed_base: bool = True):
        self.env = env
        self.latency = latency
        self.rng = rng
        self.root = root
        self.url = f"mock://{root}"
        #: Set to False to inject an outage: every effect then raises DirectoryUnavailable.
        self.available = True
        self.operations = 0
        self.server = Server(f"novalab-sim-{id(self):x}", get_info=NONE)
        self.conn = Connection(self.server, client_strategy=MOCK_SYNC, raise_exceptions=False)
        self.conn.bind()
        self._dit = self.server.dit  # type: ignore[attr-defined]  # the mock's in-memory DIT, not in the stubs
        #: Search answers by (base, filter, scope, attributes), dropped on every write:
        #: the mock's search scans and re-parses the whole DIT (milliseconds each), and
        #: a run's directory is written during set-up and then only read.
        self._answers: dict = {}
        if seed_base:
            for dn, classes, attrs in Directory(root).base_entries():
                self.apply(LdapAdd(dn, classes, attrs))

    # -- SimPy side ---------------------------------------------------------------

    def perform(self, agent, effect):
        """The performer registered with SimRuntime: apply, then wait the latency."""
        delay = self.latency.sample(self.rng)
        if not self.available:
            if delay > 0:
                yield self.env.timeout(delay)
            raise DirectoryUnavailable(f"LDAP at {self.url} is not answering (injected outage)")
        result = self.apply(effect)
        if delay > 0:
            yield self.env.timeout(delay)
        return result

    # -- the operations, at one instant ---------------------------------------------

    def apply(self, effect):
        """Perform one LDAP effect now and return its result (no latency, no outage)."""
        self.operations += 1
        kind = type(effect)
        if kind is LdapSearch:
            key = (effect.base, effect.filter, effect.scope, effect.attributes)
            if key in self._answers:
                return self._answers[key]
        else:
            self._answers.clear()
        try:
            if kind is LdapSearch:
                answer = self._answers[key] = self._search(effect)
                return answer
            if kind is LdapAdd:
                return self._add(effect)
            if kind is LdapModify:
                return self._modify(effect)
            if kind is LdapDelete:
                return self._delete(effect)
        except LDAPException as e:  # ldap3 refused the request itself (bad DN or filter)
            raise InvalidParameterValue(f"LDAP at {self.url} refused {kind.__name__}: {e}") from None
        raise TypeError(f"not a directory effect: {effect!r}")

    def _canonical(self, dn: str) -> str | None:
        """The DN as stored (the mock's own spelling), or None when absent."""
        try:
            key = safe_dn(dn)
        except LDAPException:
            return None
        if key not in self._dit:
            return None
        keymap = getattr(self._dit, "_case_insensitive_keymap", None)
        return keymap.get(key.strip().lower(), key) if keymap is not None else key

    def _entry(self, dn: str):
        canonical = self._canonical(dn)
        return (canonical, self._dit[canonical]) if canonical is not None else (None, None)

    def _check(self, result, what: str, dn: str):
        code = result.get("result", 0)
        if code == 0:
            return
        description = result.get("description", "")
        if code == 68:
            raise DirectoryConflict(f"{dn} already exists")
        if code == 32:
            raise NotFound(f"{dn}: no such object ({what})")
        raise InvalidParameterValue(f"LDAP at {self.url} refused {what} of {dn}: {description} {result.get('message', '')}".rstrip())

    def _search(self, effect: LdapSearch):
        scope = _SCOPES.get(effect.scope)
        if scope is None:
            raise ValueError(f"LdapSearch scope must be base, level or subtree, not {effect.scope!r}")
        requested = list(effect.attributes) or ["*"]
        self.conn.search(effect.base, effect.filter, scope, attributes=requested)
        if self.conn.result.get("result") == 32:  # no such base: nothing matches
            return ()
        self._check(self.conn.result, "search", effect.base)
        base = _norm(effect.base)
        spelling = {name.lower(): name for name in effect.attributes}
        out = []
        for item in self.conn.response or ():
            if item.get("type") != "searchResEntry":
                continue
            dn = self._canonical(item["dn"]) or item["dn"]
            if not self._in_scope(_norm(dn), base, effect.scope):
                continue
            attrs = {}
            for name, values in item["raw_attributes"].items():
                if not values:
                    continue
                attrs[spelling.get(name.lower(), name)] = tuple(
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
            out.append((dn, attrs))
        return tuple(sorted(out, key=lambda entry: entry[0]))

    @staticmethod
    def _in_scope(norm: str, base: str, scope: str) -> bool:
        """The mock matches bare string suffixes and puts the base in a one-level
        search; LDAP does neither."""
        if scope == "base":
            return norm == base
        if not norm.endswith("," + base):
            return scope == "subtree" and norm == base
        if scope == "subtree":
            return True
        head = norm[:-len(base) - 1]
        return "," not in head.replace("\\,", "")

    def _add(self, effect: LdapAdd):
        if self._canonical(effect.dn) is not None:
            raise DirectoryConflict(f"{effect.dn} already exists")
        parent = split_first_rdn(effect.dn)[2]
        # Only the suffix (the run's root) may be added without a parent.
        if _norm(effect.dn) != _norm(self.root) and (not parent or self._canonical(parent) is None):
            raise NotFound(f"cannot add {effect.dn}: its parent does not exist")
        attrs = {name: list(values) for name, values in effect.attributes.items() if values}
        self.conn.add(effect.dn, list(effect.object_classes), attrs)
        self._check(self.conn.result, "add", effect.dn)
        return True

    def _stored(self, entry, attr, value):
        """The value of ``attr`` stored in ``entry`` that equals ``value`` under the
        mock's matching (ignoring case), as stored; None when there is none."""
        if attr not in entry:
            return None
        wanted = value.encode("utf-8") if isinstance(value, str) else value
        check = self.conn.strategy._check_equality
        for stored in entry[attr]:
            if check(wanted, stored):
                return stored.decode("utf-8", "replace") if isinstance(stored, bytes) else stored
        return None

    def _modify(self, effect: LdapModify):
        dn, entry = self._entry(effect.dn)
        if entry is None:
            return False
        changes: dict = {}
        for op, attr, values in effect.changes:
            if op not in _OPS:
                raise ValueError(f"LdapModify op must be add, delete or replace, not {op!r}")
            if op == "add":
                present = [v for v in values if self._stored(entry, attr, v) is not None]
                if present:
                    raise DirectoryConflict(f"{effect.dn} already has {attr}={present[0]}")
            elif op == "delete":
                stored = [self._stored(entry, attr, v) for v in values]
                if attr not in entry or None in stored:
                    raise NotFound(f"{effect.dn} has no such {attr} value to delete")
                values = tuple(dict.fromkeys(stored))  # the stored spelling: the mock removes exact bytes
                left = len(entry[attr]) - len(values) if values else 0
                classes = {v.decode().lower() if isinstance(v, bytes) else str(v).lower()
                           for v in entry.get("objectClass", [])}
                if attr.lower() == "member" and left <= 0 and classes & _GROUP_CLASSES:
                    raise DirectoryConflict(f"{effect.dn} would lose its last member (objectClassViolation)")
            changes.setdefault(attr, []).append((_OPS[op], list(values)))
        self.conn.modify(dn, changes)
        self._check(self.conn.result, "modify", effect.dn)
        return True

    def _delete(self, effect: LdapDelete):
        dn, entry = self._entry(effect.dn)
        if entry is None:
            return False
        suffix = "," + _norm(dn)
        if any(_norm(other).endswith(suffix) for other in self._dit):
            raise DirectoryConflict(f"{effect.dn} has children (notAllowedOnNonLeaf)")
        self.conn.delete(dn)
        self._check(self.conn.result, "delete", effect.dn)
        return True

    # -- instrumentation ------------------------------------------------------------

    def dump(self) -> dict:
        """Every entry as {dn: {attr: tuple of str}} (for tests and invariant checks)."""
        out = {}
        for dn, entry in self._dit.items():
            if _norm(dn) == "cn=schema":
                continue
            out[dn] = {name: tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
                       for name, values in entry.items() if name != "entryDN"}
        return out


def install(runtime, latency, rng, root: str = "dc=novalab,dc=local") -> SimDirectory:
    """Give ``runtime`` (a SimRuntime) a directory: one fake server for the run, each
    effect taking ``latency.sample(rng)`` seconds. Returns the SimDirectory (its
    ``available`` flag is the fault plan's switch)."""
    directory = SimDirectory(runtime.env, latency, rng, root)
    runtime.register(DirectoryEffect, directory)
    return directory
