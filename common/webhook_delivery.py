"""The web hook delivery worker: a periodic task of the network hosts. Pure.

Theory of operation
-------------------
Pending deliveries live in the store only (``common.webhooks`` queues them): a hash per
delivery and the ``webhooks:pending`` zset scored by when each is due. A pass
(``deliver_due``) takes up to ``batch`` due deliveries and attempts each as a task of
its own:

1. *claim*: a transaction guarded on the attempts read counts the attempt and pushes
   the delivery ``lease`` seconds into the future. Two workers (network hosts) never
   attempt one delivery at once, and a worker killed mid-POST loses nothing: the
   delivery comes due again when the lease ends (at least once, never "at most").
2. *POST* (``HttpPost``) with the hook's current secret; no hook any more (removed)
   cancels it.
3. *settle*, guarded on the attempts it claimed: a 2xx removes it (``delivered``); a
   failure waits ``backoff`` (exponential, capped) or, at ``max_attempts``, removes it
   (``gave_up``). A receiver that got it but whose answer was lost gets it again with
   the same event id: receivers de-duplicate on ``X-Novalab-Event-Id``.

Every removal gives the project's backlog back. Counters (``webhooks:stats``) are
written in the same transactions as the outcomes they count.
"""

from __future__ import annotations

from common import keys
from common.effects import Del, Guard, HGetAll, HIncrBy, HSet, HttpPost, Now, Transaction, ZAdd, ZRangeByScore, ZRem
from common.errors import DeliveryFailed, NovaError
from common.webhooks import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    USER_AGENT,
    WebhookConfig,
    backoff,
    sign,
)
from common.workload import Fork, Join


def deliver_due(config: WebhookConfig):
    """One pass: attempt the deliveries due now (at most ``config.batch``, at once);
    -> how many it took up."""
    now = yield Now()
    due = yield ZRangeByScore(keys.WEBHOOK_PENDING, "-inf", repr(now), config.batch)
    if not due:
        return 0
    handles = []
    for delivery_id, _ in due:
        handles.append((yield Fork(f"webhook {delivery_id}", attempt(delivery_id, config))))
    yield Join(tuple(handles), len(handles))
    return len(handles)


def attempt(delivery_id: str, config: WebhookConfig):
    """Claim, POST and settle one delivery (module docstring); -> its outcome:
    ``delivered``, ``retry``, ``gave_up``, ``cancelled`` or ``skipped`` (another worker
    has it, or the store failed: it comes due again)."""
    try:
        return (yield from _attempt(delivery_id, config))
    except NovaError:
        return "skipped"  # e.g. the store is down: the lease makes it due again


def _attempt(delivery_id: str, config: WebhookConfig):
    key = keys.webhook_delivery(delivery_id)
    record = yield HGetAll(key)
    if not record:  # settled meanwhile; an entry whose hash is gone is stale
        yield Transaction(ops=(ZRem(keys.WEBHOOK_PENDING, (delivery_id,)),), guards=(Guard(key, "id", None),))
        return "skipped"
    now = yield Now()
    attempts = int(record["attempts"]) + 1
    claimed = yield Transaction(
        ops=(HSet(key, {"attempts": str(attempts)}), ZAdd(keys.WEBHOOK_PENDING, {delivery_id: now + config.lease})),
        guards=(Guard(key, "attempts", record["attempts"]),),
    )
    if claimed is None:
        return "skipped"
    hook = yield HGetAll(keys.webhook(record["hook_id"]))
    if hook.get("url") != record["url"]:
        yield from _settle(record, attempts, "cancelled")
        return "cancelled"
    body = record["body"].encode("utf-8")
    headers = (("Content-Type", "application/json"), ("User-Agent", USER_AGENT),
               (SIGNATURE_HEADER, sign(hook["secret"], body)), (EVENT_ID_HEADER, record["event_id"]),
               (ATTEMPT_HEADER, str(attempts)))
    try:
        status = yield HttpPost(record["url"], body, headers, config.timeout)
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except DeliveryFailed as e:
        error = str(e) or "no answer"
    if not error:
        yield from _settle(record, attempts, "delivered")
        return "delivered"
    if attempts >= config.max_attempts:
        yield from _settle(record, attempts, "gave_up", error)
        return "gave_up"
    now = yield Now()
    yield Transaction(
        ops=(HSet(key, {"last_error": error[:500]}),
             ZAdd(keys.WEBHOOK_PENDING, {delivery_id: now + backoff(attempts, config)}),
             HIncrBy(keys.WEBHOOK_STATS, "failed_attempts", 1)),
        guards=(Guard(key, "attempts", str(attempts)),),
    )
    return "retry"


def _settle(record: dict, attempts: int, outcome: str, error: str = ""):
    """Remove a delivery for good, counting ``outcome`` (and the failed last attempt)."""
    key = keys.webhook_delivery(record["id"])
    failed = (HIncrBy(keys.WEBHOOK_STATS, "failed_attempts", 1),) if error else ()
    yield Transaction(
        ops=(Del((key,)), ZRem(keys.WEBHOOK_PENDING, (record["id"],)),
             HIncrBy(keys.WEBHOOK_BACKLOG, record["project"], -1), HIncrBy(keys.WEBHOOK_STATS, outcome, 1), *failed),
        guards=(Guard(key, "attempts", str(attempts)),),
    )
