"""Key pairs: the SSH keys of EC2's CreateKeyPair, DescribeKeyPairs and DeleteKeyPair.

A key pair is named per user. The datastore keeps one hash per user,
``keypairs:<user>``, whose field ``<name>`` holds the key pair as JSON text
(``name``, ``key_type``, ``fingerprint``, ``public_key``, ``created_at``). So a name
is never part of a Redis key, and one user's names can never reach another user's
keys. The private key is not stored anywhere: CreateKeyPair returns it once.

2010 kept key pairs in LDAP (``novaKeyPair`` entries under the user) and made them
with ``ssh-keygen`` in a process pool. Here they live in the datastore with the
instances that name them. Making a key is randomness, so it is an effect,
``GenerateKeyPair``, performed by the API host (``real.api`` registers the
performer).

The fingerprint is what 2010's ``ssh-keygen -l`` printed: the MD5 of the public key
blob, as colon-separated hex. AWS uses the SHA-1 of the private key (DER, PKCS#8) for
keys it makes. A client compares a fingerprint only with one this API gave it, so
either works.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from common.effects import Guard, HDel, HGet, HGetAll, HSet, KeyPairEffect, Now, Transaction
from common.errors import InvalidParameterValue, NotFound

#: Key types CreateKeyPair accepts (EC2's KeyType); "rsa" is the default, as in EC2.
KEY_TYPES = ("rsa", "ed25519")

#: EC2's rule: up to 255 ASCII characters. We also refuse control characters, which
#: could not be rendered in the XML answer.
NAME_RE = re.compile(r"^[\x20-\x7e]{1,255}$")


class KeyPairNotFound(NotFound):
    code = "InvalidKeyPair.NotFound"


class KeyPairDuplicate(InvalidParameterValue):
    code = "InvalidKeyPair.Duplicate"


@dataclass(frozen=True)
class GenerateKeyPair(KeyPairEffect):
    """Make a fresh key of ``key_type`` (one of KEY_TYPES).

    Returns ``(private_key, public_key)``: ``private_key`` is PEM text (PKCS#1
    ``RSA PRIVATE KEY`` for rsa, as EC2 hands out; OpenSSH format for ed25519), and
    ``public_key`` is one OpenSSH line ending in ``comment``. Randomness, so not
    idempotent. Raises ValueError for an unknown type (callers validate first).
    """

    key_type: str = "rsa"
    comment: str = ""

    def perform_with(self, performer, agent):
        return performer.generate(self.key_type, self.comment)


def user_keypairs(user_id: str) -> str:
    """The hash of a user's key pairs (see the module docstring)."""
    return f"keypairs:{user_id}"


def check_name(name: str, parameter: str = "KeyName") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidParameterValue(
            f"{parameter} must be 1 to 255 printable ASCII characters, got {name!r}"[:400]
        )
    return name


def fingerprint(public_key: str) -> str:
    """MD5 of the OpenSSH public key's blob, colon-separated (``ssh-keygen -l -E md5``).
    Raises InvalidParameterValue when ``public_key`` is not an OpenSSH key line."""
    parts = public_key.split()
    if len(parts) < 2:
        raise InvalidParameterValue("not an OpenSSH public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValue("the public key is not valid base64") from None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _decode(name: str, text: str | None) -> dict | None:
    if text is None:
        return None
    record = json.loads(text)
    record["name"] = name
    return record


def get(user_id: str, name: str):
    """-> the key pair ``name`` of ``user_id`` as a dict, or None."""
    return _decode(name, (yield HGet(user_keypairs(user_id), name)))


def describe(user_id: str, names=()):
    """-> the user's key pairs sorted by name; only ``names`` when given, each of
    which must exist (KeyPairNotFound names the first that does not)."""
    found = yield HGetAll(user_keypairs(user_id))
    pairs = {name: _decode(name, text) for name, text in found.items()}
    for name in names:
        if name not in pairs:
            raise KeyPairNotFound(f"the key pair {name!r} does not exist")
    wanted = set(names) or set(pairs)
    return [pairs[name] for name in sorted(wanted)]


def create(user_id: str, name: str, key_type: str = "rsa"):
    """Make key pair ``name`` for ``user_id``. Returns its record plus
    ``private_key``. Raises KeyPairDuplicate when the user already has that name
    (checked before the key is made, and again atomically when it is written, so two
    racing requests store one key and the loser gets the error). Raises
    InvalidParameterValue for a bad name or type, before any effect."""
    check_name(name)
    if key_type not in KEY_TYPES:
        raise InvalidParameterValue(f"KeyType must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")
    key = user_keypairs(user_id)
    if (yield HGet(key, name)) is not None:
        raise KeyPairDuplicate(f"the key pair {name!r} already exists")
    private_key, public_key = yield GenerateKeyPair(key_type, f"{user_id}@novalab")
    now = yield Now()
    record = {
        "name": name,
        "key_type": key_type,
        "fingerprint": fingerprint(public_key),
        "public_key": public_key,
        "created_at": repr(now),
    }
    done = yield Transaction(
        ops=(HSet(key, {name: json.dumps(record, sort_keys=True)}),),
        guards=(Guard(key, name, None),),
    )
    if done is None:
        raise KeyPairDuplicate(f"the key pair {name!r} already exists")
    return {**record, "private_key": private_key}


def delete(user_id: str, name: str):
    """Delete key pair ``name``; True if it existed. Deleting a missing key pair is not
    an error (EC2 answers true either way)."""
    check_name(name)
    return bool((yield HDel(user_keypairs(user_id), (name,))))
