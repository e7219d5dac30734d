"""RunInstances idempotency: a ``ClientToken`` names one reservation. Pure.

EC2's rule: the same token with the same parameters from the same account answers with
the reservation the first request made and launches nothing; the same token with other
parameters is IdempotentParameterMismatch. The token is claimed with one guarded
transaction before anything is launched or reserved, so of two requests racing with one
token exactly one claims it. Each instance's id is added to the token's record in the
transaction that creates the instance, so the record never names an instance that does
not exist nor misses one that does. A retry that arrives while the first request is
still launching answers with the instances created so far.

A token lives ``TOKEN_LIFETIME`` after its claim; then the build reaper deletes it
(``expire``) and the token may be used again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from common import keys
from common.effects import Del, Guard, HGet, HGetAll, HSet, Transaction, ZAdd, ZRangeByScore, ZRem
from common.errors import InvalidParameterValue, NovaError

#: EC2 keeps a token for at least 24 hours; the bound keeps the store from growing with
#: every launch ever made, and a client retries within minutes, not days.
TOKEN_LIFETIME = 24 * 3600.0
#: EC2's limit on a token's length.
MAX_TOKEN_LENGTH = 64
#: Claims tried before giving up: a second try is needed only when the token expired
#: (or was released) between our claim and our read.
MAX_CLAIM_ATTEMPTS = 3


class IdempotentParameterMismatch(InvalidParameterValue):
    code = "IdempotentParameterMismatch"


def check_token(token: str) -> str:
    """The token, or InvalidParameterValue: 1 to 64 printable ASCII characters."""
    if not 1 <= len(token) <= MAX_TOKEN_LENGTH or not all(" " < c <= "~" for c in token):
        raise InvalidParameterValue(
            f"ClientToken must be 1 to {MAX_TOKEN_LENGTH} printable ASCII characters without spaces, "
            f"got {token[:80]!r}")
    return token


def digest(params: Mapping[str, object]) -> str:
    """A fingerprint of the request's parameters, to compare a retry with the first."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()


def claim(project_id: str, token: str, params_digest: str, reservation_id: str, now: float):
    """Claim ``token`` for ``reservation_id``. -> None when this request claimed it (go
    on and launch); else the earlier reservation ``{"reservation_id", "instances"}``.
    Raises IdempotentParameterMismatch when the earlier request had other parameters."""
    key = keys.client_token(project_id, token)
    for _ in range(MAX_CLAIM_ATTEMPTS):
        expires_at = now + TOKEN_LIFETIME
        fields = {"params": params_digest, "reservation_id": reservation_id, "expires_at": repr(expires_at)}
        done = yield Transaction(
            ops=(HSet(key, fields), ZAdd(keys.CLIENT_TOKENS, {key: expires_at})),
            guards=(Guard(key, "reservation_id", None),),
        )
        if done is not None:
            return None
        held = yield HGetAll(key)
        if not held:
            continue  # released or expired since the claim failed
        if float(held.get("expires_at") or 0) <= now:
            yield from _forget(key, held.get("expires_at"))
            continue
        if held.get("params") != params_digest:
            raise IdempotentParameterMismatch(
                f"the client token {token!r} was used for a RunInstances with other parameters")
        return earlier_reservation(held)
    raise NovaError(f"the client token {token!r} could not be claimed after {MAX_CLAIM_ATTEMPTS} attempts")


def earlier_reservation(held: Mapping[str, str]) -> dict:
    """The reservation a token's record names, instances in launch order."""
    launched = sorted((int(name.split(".", 1)[1]), value) for name, value in held.items()
                      if name.startswith("instance."))
    return {"reservation_id": held["reservation_id"], "instances": [instance_id for _, instance_id in launched]}


def record_instance(project_id: str, token: str, index: int, instance_id: str) -> HSet:
    """The op that adds an instance to the token's reservation (commit it with the instance)."""
    return HSet(keys.client_token(project_id, token), {f"instance.{index}": instance_id})


def release(project_id: str, token: str, reservation_id: str):
    """Give the token back when its request launched nothing (quota refused it)."""
    key = keys.client_token(project_id, token)
    yield Transaction(ops=(Del((key,)), ZRem(keys.CLIENT_TOKENS, (key,))),
                      guards=(Guard(key, "reservation_id", reservation_id),))


def expire(now: float, batch: int):
    """Delete at most ``batch`` tokens past their lifetime; -> how many were due."""
    due = yield ZRangeByScore(keys.CLIENT_TOKENS, "-inf", repr(now), batch)
    for key, _ in due:
        yield from _forget(key, (yield HGet(key, "expires_at")))
    return len(due)


def _forget(key: str, expires_at: str | None):
    """Delete a token's record unless it was claimed again since ``expires_at`` was read."""
    yield Transaction(ops=(Del((key,)), ZRem(keys.CLIENT_TOKENS, (key,))),
                      guards=(Guard(key, "expires_at", expires_at),))
