"""LDAP text escaping: RFC 4515 search-filter values and RFC 4514 DN values.

Every value that goes into a search filter goes through ``filter_eq``, so a ``*`` is a
literal star and never a presence filter; every value in a DN goes through
``escape_dn_value``."""

from __future__ import annotations

import functools
import re

_FILTER_SPECIAL = {"\\": "\\5c", "*": "\\2a", "(": "\\28", ")": "\\29", "\x00": "\\00"}
_FILTER_NEEDS = re.compile(r"[\\*()\x00]")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")


def escape_filter_value(value: str) -> str:
    """``value`` as an RFC 4515 assertion value: ``\\ * ( )`` and NUL as ``\\XX``."""
    if not isinstance(value, str):
        raise TypeError(f"a filter value must be a str, not {type(value).__name__}")
    if _FILTER_NEEDS.search(value) is None:
        return value  # the usual case: nothing to escape
    return "".join(_FILTER_SPECIAL.get(ch, ch) for ch in value)


def filter_eq(attr: str, value: str) -> str:
    """The equality filter ``(attr=value)`` with ``value`` escaped."""
    if not isinstance(attr, str) or not _ATTRIBUTE.match(attr):
        raise ValueError(f"not an attribute name: {attr!r}")
    return f"({attr}={escape_filter_value(value)})"


def filter_and(*filters: str) -> str:
    return filters[0] if len(filters) == 1 else "(&" + "".join(filters) + ")"


def filter_or(*filters: str) -> str:
    return filters[0] if len(filters) == 1 else "(|" + "".join(filters) + ")"


_DN_SPECIAL = set('"+,;<>\\=')
_DN_NEEDS = re.compile(r'["+,;<>\\=\x00]')


def escape_dn_value(value: str) -> str:
    """``value`` as an RFC 4514 attribute value: ``" + , ; < > \\ =`` backslashed, a
    leading ``#`` or space and a trailing space backslashed, NUL as ``\\00``."""
    if not isinstance(value, str):
        raise TypeError(f"a DN value must be a str, not {type(value).__name__}")
    if _DN_NEEDS.search(value) is None and value[:1] not in ("#", " ") and value[-1:] != " ":
        return value  # the usual case: nothing to escape
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch == "\x00":
            out.append("\\00")
        elif ch in _DN_SPECIAL or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def unescape_dn_value(value: str) -> str:
    """Undo ``escape_dn_value`` (``\\c`` and ``\\XX`` hex pairs, as UTF-8)."""
    if "\\" not in value:
        return value.encode().decode()  # nothing escaped; a lone surrogate fails as below
    raw = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            pair = value[i + 1:i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            raw += value[i + 1].encode()
            i += 2
            continue
        raw += ch.encode()
        i += 1
    return raw.decode("utf-8", "replace")


def split_first_rdn(dn: str) -> tuple[str, str, str]:
    """-> (attribute, raw escaped value, rest of the DN) of ``dn``'s first RDN."""
    if "\\" in dn:
        return _split_escaped_rdn(dn)
    rdn, _, rest = dn.partition(",")  # no escaped comma: the first comma ends the RDN
    attr, _, value = rdn.partition("=")
    return attr.strip(), value, rest


def _split_escaped_rdn(dn: str) -> tuple[str, str, str]:
    """``split_first_rdn`` of a DN with backslashes: skip each escaped character."""
    i = 0
    while i < len(dn):
        if dn[i] == "\\":
            i += 2
            continue
        if dn[i] == ",":
            break
        i += 1
    rdn, rest = dn[:i], dn[i + 1:]
    attr, _, value = rdn.partition("=")
    return attr.strip(), value, rest


@functools.lru_cache(maxsize=1024)
def compared_dn(dn: str) -> str:
    """``dn`` as the nova-schema directory compares DNs: spaces dropped, lower case
    (cached: the same few DNs, users, projects and role groups, recur on every request)."""
    return dn.replace(" ", "").lower()
