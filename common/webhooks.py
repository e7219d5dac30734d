"""Web hooks: a project registers URLs; every instance lifecycle event and address event
of the project is POSTed to each of them as signed JSON. Pure: the store and the POST
are effects.

Theory of operation
-------------------
*Registering* (``register``, ``hooks``, ``remove``; ``novalab manage webhook``) writes
the hook (``webhook:<id>``: URL and signing secret) and the project's index
(``project:<pid>:webhooks``: id -> URL).

*Enqueueing*: the managers call ``event_ops`` for a change of an instance or address
of a project that had web hooks when the instance was launched or the address
allocated (the record carries ``webhooks: "1"``, read for free with the quota, so a
project without hooks pays nothing). It reads the project's hooks and backlog (one
round trip) and returns the store ops that queue one *delivery* per hook: a hash with
the event's JSON body and a member of the ``webhooks:pending`` zset scored by when to
try it. The caller commits them in the same transaction as the change itself, so an
event is queued exactly when the change happens: never lost, never for a change that
a guard refused.

*Delivering* is ``common.webhook_delivery``: a periodic task of the network hosts.

*Limits* (each says why where it is defined): hooks per project, URL length, the
pending backlog per project (past it new events are dropped and counted in
``webhooks:stats`` ``dropped``), attempts per delivery, seconds per attempt.

Registrations count from the next launch or allocation: instances already running
when a project registers its first hook send it nothing (their records were not
marked), and events of a hook removed meanwhile are cancelled at delivery (counted).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from common import keys, lifecycle
from common.analysis.stats import percentile
from common.effects import (
    Del,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    NewId,
    SAdd,
    SMembers,
    SRem,
    StoreCommand,
    Transaction,
    ZAdd,
)
from common.errors import InvalidParameterValue, NotFound, NovaError, QuotaExceeded

SIGNATURE_HEADER = "X-Novalab-Signature"
EVENT_ID_HEADER = "X-Novalab-Event-Id"
ATTEMPT_HEADER = "X-Novalab-Delivery-Attempt"
USER_AGENT = "novalab-webhooks/1"

#: Hooks one project may register: each event becomes one delivery per hook.
MAX_HOOKS_PER_PROJECT = 10
#: Longest URL taken (browsers and servers commonly stop near 2,000 characters).
MAX_URL_LENGTH = 2000
#: Deliveries a project may have pending. A receiver down for long would otherwise
#: grow the store without bound; past this, new events of the project are dropped
#: (counted in ``dropped``) until deliveries finish or give up.
MAX_BACKLOG = 1000

#: What a project id may be here (it becomes part of store keys).
PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: The record field that marks an instance or a floating address whose project had hooks.
MARK = "webhooks"

#: Instance state -> the event a hook hears (the states in between are not events).
INSTANCE_EVENTS = {
    lifecycle.SCHEDULING: "instance.pending",
    lifecycle.RUNNING: "instance.running",
    lifecycle.ERROR: "instance.error",
    lifecycle.SHUTTING_DOWN: "instance.shutting-down",
    lifecycle.DELETED: "instance.terminated",
}
FIXED_ALLOCATED = "address.fixed.allocated"
FIXED_RELEASED = "address.fixed.released"
FLOATING_ALLOCATED = "address.floating.allocated"
FLOATING_ASSOCIATED = "address.floating.associated"
FLOATING_DISASSOCIATED = "address.floating.disassociated"
FLOATING_RELEASED = "address.floating.released"
EVENT_TYPES = (*INSTANCE_EVENTS.values(), FIXED_ALLOCATED, FIXED_RELEASED, FLOATING_ALLOCATED,
               FLOATING_ASSOCIATED, FLOATING_DISASSOCIATED, FLOATING_RELEASED)


@dataclass(frozen=True)
class WebhookConfig:
    """How the delivery worker retries (scenario seconds)."""

    #: Seconds between two passes of the worker over the due deliveries.
    interval: float = 1.0
    #: Seconds one POST may take before it counts as failed (a slow receiver must not
    #: hold a worker).
    timeout: float = 5.0
    #: Attempts per delivery, the first included; then it gives up (counted in ``gave_up``).
    #: With the defaults the last attempt comes about 8.5 minutes after the first.
    max_attempts: int = 10
    #: The wait after the n-th failed attempt is backoff_base * 2**(n-1), at most backoff_max.
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    #: Deliveries one pass takes at once (each a task of its own: one slow receiver
    #: does not hold the others back, and a pass's concurrency is bounded).
    batch: int = 16

    @property
    def lease(self) -> float:
        """A delivery being attempted is due again this long after its attempt began, so
        a worker killed mid-POST loses nothing (well past ``timeout``)."""
        return max(30.0, 2 * self.timeout)


def backoff(failed_attempts: int, config: WebhookConfig) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure (1, 2, 4... capped)."""
    return min(config.backoff_max, config.backoff_base * 2 ** max(0, failed_attempts - 1))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Novalab-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Does ``signature`` (the header as received) sign ``body`` with ``secret``?"""
    return hmac.compare_digest(sign(secret, body).encode("ascii"), signature.encode("ascii", "replace"))


def validate_url(url: str) -> str:
    """-> ``url`` when it is an absolute http or https URL a hook may have; raises
    InvalidParameterValue naming what is wrong."""
    if not isinstance(url, str) or not url:
        raise InvalidParameterValue("a web hook URL is needed")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidParameterValue(f"a web hook URL is at most {MAX_URL_LENGTH} characters, this one has {len(url)}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidParameterValue(f"web hook URL {url!r} has a space or control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidParameterValue(f"web hook URL {url!r} does not parse: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidParameterValue(f"web hook URL {url!r}: the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidParameterValue(f"web hook URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidParameterValue(f"web hook URL {url!r}: no user or password in the URL (the signature authenticates)")
    if parts.fragment:
        raise InvalidParameterValue(f"web hook URL {url!r}: no fragment (#...)")
    if port == 0:
        raise InvalidParameterValue(f"web hook URL {url!r}: port 0")
    return url


def event_body(event_id: str, event_type: str, project: str, at: float, data: dict) -> str:
    """The JSON a receiver gets (keys sorted, compact): id, type, time (seconds since
    the epoch; scenario seconds in a simulation), project and the event's data."""
    return json.dumps({"id": event_id, "type": event_type, "time": at, "project": project, "data": data},
                      sort_keys=True, separators=(",", ":"))


def instance_data(record: dict, previous: str | None, state: str) -> dict:
    """An instance event's data, from its record as the change leaves it."""
    data = {"instance_id": record["id"], "state": state, "previous_state": previous or "",
            "instance_type": record.get("instance_type", ""), "image_id": record.get("image_id", ""),
            "host": record.get("host", ""), "fixed_ip": record.get("fixed_ip", "")}
    if state == lifecycle.ERROR:
        data["reason"] = record.get("error", "")
    return data


# -- enqueueing -------------------------------------------------------------------------


def hooks_read(project_id: str) -> HGetAll:
    """The read that tells whether a project has hooks: an op to put in a transaction
    the caller makes anyway (its result is the hooks, id -> URL)."""
    return HGetAll(keys.webhooks(project_id))


def event_ops(project_id: str, event_type: str, at: float, data: dict):
    """-> the store ops that queue ``event_type`` for every hook of ``project_id``, to
    commit in the same transaction as the change (module docstring); () when it has
    none; only a ``dropped`` count when its backlog is full."""
    hooks, backlog = yield Transaction(ops=(hooks_read(project_id), HGet(keys.WEBHOOK_BACKLOG, project_id)))
    if not hooks:
        return ()
    if int(backlog or 0) + len(hooks) > MAX_BACKLOG:
        return (HIncrBy(keys.WEBHOOK_STATS, "dropped", len(hooks)),)
    event_id = yield NewId("ev")
    body = event_body(event_id, event_type, project_id, at, data)
    ops: list[StoreCommand] = []
    for hook_id in sorted(hooks):
        delivery_id = f"{event_id}.{hook_id}"
        ops += (HSet(keys.webhook_delivery(delivery_id), {
                    "id": delivery_id, "event_id": event_id, "hook_id": hook_id, "project": project_id,
                    "url": hooks[hook_id], "body": body, "created_at": repr(at), "attempts": "0"}),
                ZAdd(keys.WEBHOOK_PENDING, {delivery_id: at}))
    ops += (HIncrBy(keys.WEBHOOK_BACKLOG, project_id, len(hooks)), HIncrBy(keys.WEBHOOK_STATS, "events", 1),
            HIncrBy(keys.WEBHOOK_STATS, "deliveries", len(hooks)))
    return tuple(ops)


def marked_event_ops(record: dict, project_id: str, event_type: str, at: float, data: dict):
    """``event_ops`` when ``record`` carries the mark, else () without a round trip."""
    if not record.get(MARK):
        return ()
    return (yield from event_ops(project_id, event_type, at, data))


# -- registering -------------------------------------------------------------------------


class HookExists(NovaError):
    """The project has a hook for that URL already."""

    code = "InvalidParameterValue"


def register(project_id: str, url: str, hook_id: str, secret: str, at: float):
    """Register ``url`` for ``project_id`` under ``hook_id`` with ``secret``; -> the hook.
    Raises InvalidParameterValue (a bad project id or URL), HookExists (the project has
    that URL) or QuotaExceeded (MAX_HOOKS_PER_PROJECT); nothing is written then."""
    if not PROJECT_ID.match(project_id or ""):
        raise InvalidParameterValue(f"bad project id {project_id!r} (letters, digits, '.', '_', '-')")
    url = validate_url(url)
    hooks = yield hooks_read(project_id)
    for known, known_url in sorted(hooks.items()):
        if known_url == url:
            raise HookExists(f"project {project_id} has {url} already, as {known}")
    if len(hooks) >= MAX_HOOKS_PER_PROJECT:
        raise QuotaExceeded(f"project {project_id} has {len(hooks)} web hooks, the most it may have")
    hook = {"id": hook_id, "project": project_id, "url": url, "secret": secret, "created_at": repr(at)}
    done = yield Transaction(
        ops=(HSet(keys.webhook(hook_id), hook), HSet(keys.webhooks(project_id), {hook_id: url}),
             SAdd(keys.WEBHOOK_PROJECTS, (project_id,))),
        guards=(Guard(keys.webhook(hook_id), "id", None),),
    )
    if done is None:
        raise InvalidParameterValue(f"web hook id {hook_id} is taken")
    return hook


def hooks(project_id: str | None = None):
    """-> the hooks of ``project_id`` (every project's when None), without their
    secrets, sorted by project and URL; each with ``pending``, its project's backlog."""
    projects = [project_id] if project_id else sorted((yield SMembers(keys.WEBHOOK_PROJECTS)))
    found = []
    for project in projects:
        index, backlog = yield Transaction(ops=(hooks_read(project), HGet(keys.WEBHOOK_BACKLOG, project)))
        for hook_id in sorted(index, key=lambda h: (index[h], h)):
            hook = yield HGetAll(keys.webhook(hook_id))
            if hook:
                found.append({"id": hook_id, "project": project, "url": hook["url"],
                              "created_at": float(hook["created_at"]), "pending": int(backlog or 0)})
    return found


def remove(project_id: str, url_or_id: str):
    """Remove the hook of ``project_id`` with that id or URL; -> its id. Its pending
    deliveries are cancelled when they come due. Raises NotFound."""
    index = yield hooks_read(project_id)
    matches = sorted(h for h, url in index.items() if url_or_id in (h, url))
    if not matches:
        raise NotFound(f"project {project_id} has no web hook {url_or_id}")
    hook_id = matches[0]
    last = (SRem(keys.WEBHOOK_PROJECTS, (project_id,)),) if len(index) == 1 else ()
    yield Transaction(ops=(Del((keys.webhook(hook_id),)), HDel(keys.webhooks(project_id), (hook_id,)), *last))
    return hook_id


# -- what a run reports ----------------------------------------------------------------


@dataclass
class Receipts:
    """What receivers got, for a run's summary (the sim's modelled receivers and real
    mode's HTTP ones both write here): every event id per receiver URL, and the lag from
    the event's time to its first arrival."""

    seen: dict[str, set[str]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    duplicates: int = 0
    answered: int = 0

    def received(self, url: str, body: bytes, now: float) -> None:
        """A receiver at ``url`` took ``body`` (answering 2xx) at ``now``."""
        event = json.loads(body)
        seen = self.seen.setdefault(url, set())
        if event["id"] in seen:
            self.duplicates += 1
            return
        seen.add(event["id"])
        self.lags.append(max(0.0, now - float(event["time"])))

    def summary(self) -> dict:
        return {"received": sum(len(s) for s in self.seen.values()), "duplicates": self.duplicates,
                "lag_p50": percentile(self.lags, 50), "lag_p95": percentile(self.lags, 95),
                "lag_max": max(self.lags) if self.lags else None}


STAT_NAMES = ("events", "deliveries", "delivered", "failed_attempts", "gave_up", "dropped", "cancelled")


def summary(store: Mapping, receipts: Receipts | None = None) -> dict:
    """The summary's ``webhooks`` section from a store dump (the worker's counters, what
    is still pending) and what the receivers saw."""
    stats: Mapping = store.get(keys.WEBHOOK_STATS) or {}
    registered = sum(1 for key in store if key.startswith("webhook:"))
    out = {"hooks": registered, **{name: int(stats.get(name, 0)) for name in STAT_NAMES},
           "pending": len(store.get(keys.WEBHOOK_PENDING) or {})}
    if receipts is not None:
        out.update(receipts.summary())
    return out


def summary_rows(section: dict | None) -> list[tuple[str, str]]:
    """The ``webhooks`` summary section as (label, value) rows for the printed table."""
    if not section:
        return []
    rows = [("events / deliveries", f"{section['events']:,} / {section['deliveries']:,}"),
            ("delivered", f"{section['delivered']:,}"),
            ("failed attempts (retried or last)", f"{section['failed_attempts']:,}")]
    rows += [(name.replace("_", " "), f"{section[name]:,}") for name in ("gave_up", "dropped", "cancelled", "pending")
             if section[name]]
    if section.get("lag_p50") is not None:
        rows.append(("lag to first arrival p50 / p95", f"{section['lag_p50']:.3g} / {section['lag_p95']:.3g} s"))
    if section.get("duplicates"):
        rows.append(("duplicates received", f"{section['duplicates']:,}"))
    return rows
