"""The directory family: LDAP round trips."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.effects.families import DirectoryEffect

# Directory (LDAP): performed on the runtime's directory connection. All may raise
# DirectoryUnavailable; values are tuples of str (LDAP attributes are multi-valued).


@dataclass(frozen=True)
class LdapSearch(DirectoryEffect):
    """Search below ``base`` (scope ``base``, ``level`` or ``subtree``) with ``filter``
    (already escaped: build it with common.ldap_escaping.filter_eq) -> tuple of (dn, {attr:
    tuple of values}) sorted by dn; empty when nothing (or no base) matches. Idempotent."""

    base: str
    filter: str
    scope: str = "subtree"
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False)
class LdapAdd(DirectoryEffect):
    """Add entry ``dn`` with ``object_classes`` and ``attributes`` ({attr: tuple of
    values}). Returns True; raises DirectoryConflict when it exists. Not idempotent."""

    dn: str
    object_classes: tuple[str, ...]
    attributes: Mapping[str, tuple[str, ...]]

    def __repr__(self):
        # Entries carry secret keys: traces and fingerprints name the attributes only.
        return f"LdapAdd(dn={self.dn!r}, object_classes={self.object_classes!r}, attributes={sorted(self.attributes)!r})"


@dataclass(frozen=True)
class LdapModify(DirectoryEffect):
    """Apply ``changes`` to ``dn``: each (op, attr, values) with op ``add``, ``delete``
    or ``replace``. Returns True, False when ``dn`` does not exist. Idempotent for
    replace; add of a present value raises DirectoryConflict."""

    dn: str
    changes: tuple[tuple[str, str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class LdapDelete(DirectoryEffect):
    """Delete entry ``dn`` (a leaf). Returns True if it existed, False if not.
    Idempotent."""

    dn: str
