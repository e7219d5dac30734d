"""common.webhooks and common.webhook_delivery: signing, URLs, events queued with the
change they report, and the delivery worker's claim, retry and give-up, over TinyStore."""

import hashlib
import hmac
import json

import pytest
from records import IID, KEY, record
from tiny_store import TinyStore

from common import instances, keys, webhook_delivery, webhooks
from common.effects import HttpPost, Transaction
from common.errors import DeliveryFailed, InvalidParameterValue, NotFound, QuotaExceeded
from common.fault_plan import Fault
from common.webhooks import HookExists, Receipts, WebhookConfig
from common.workload import Fork, Join

CONFIG = WebhookConfig(max_attempts=3, backoff_base=2.0, backoff_max=5.0)
URL = "http://127.0.0.1:9000/hooks"


def drive(gen, store, answers=(), reply=None):
    """Answer ``gen`` from ``store``; HttpPost takes the next of ``answers`` (a status or
    an exception), a Fork runs its work at once; ``reply`` answers a started ``gen``'s
    pending effect. -> (effects, return value)."""
    answers, effects, throw = answers if isinstance(answers, list) else list(answers), [], None
    while True:
        try:
            effect = gen.throw(throw) if throw is not None else gen.send(reply)
        except StopIteration as stop:
            return effects, stop.value
        effects.append(effect)
        reply = throw = None
        if isinstance(effect, HttpPost):
            answer = answers.pop(0)
            throw, reply = (answer, None) if isinstance(answer, Exception) else (None, answer)
        elif isinstance(effect, Fork):
            inner, reply = drive(effect.work, store, answers)
            effects += inner
        elif isinstance(effect, Join):
            reply = None
        else:
            reply = store.answer(effect)


def hooked_store(hooks=1, **extra):
    """A store where project p1 has ``hooks`` hooks (secret ``s<n>``) and IID is marked and running."""
    data = {KEY: record("running", host="h1", webhooks="1"), **extra}
    for n in range(hooks):
        drive(webhooks.register("p1", f"{URL}{n}", f"wh-{n}", f"s{n}", 1.0), TinyStore(data))
    return TinyStore(data, now=50.0)


def queue_one(store):
    """Terminate the marked instance: -> the effects (its event is queued for every hook)."""
    effects, moved = drive(instances.transition(store.data[KEY], "terminate"), store)
    assert moved == "shutting_down"
    return effects


def test_signature_is_hex_hmac_sha256_of_the_body():
    """sign() is ``sha256=`` and the hex HMAC-SHA256; verify() takes it and refuses a changed body or secret."""
    body = b'{"id":"ev-1"}'
    signature = webhooks.sign("k", body)
    assert signature == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert webhooks.verify("k", body, signature)
    assert not webhooks.verify("k", body + b" ", signature) and not webhooks.verify("j", body, signature)


@pytest.mark.parametrize("url", ["http://example.com/h", "https://127.0.0.1:8443/a?b=c", "http://[::1]:80/"])
def test_http_and_https_urls_are_taken(url):
    """Absolute http and https URLs validate as they are."""
    assert webhooks.validate_url(url) == url


@pytest.mark.parametrize("url, why", [
    ("ftp://example.com/", "scheme must be http or https"), ("example.com/h", "scheme"), ("http:///h", "no host"),
    ("http://u:p@example.com/", "no user or password"), ("http://example.com/a b", "space"),
    ("http://example.com/#x", "no fragment"), ("http://example.com:99999/", "does not parse"),
    ("http://e.com/" + "a" * 2000, "at most 2000"), ("", "URL is needed")])
def test_bad_urls_are_refused_by_name(url, why):
    """A URL that is not absolute http(s) is refused with what is wrong."""
    with pytest.raises(InvalidParameterValue, match=why):
        webhooks.validate_url(url)


def test_backoff_doubles_from_the_base_up_to_the_cap():
    """1st failure waits the base, each next one twice as long, never past backoff_max."""
    assert [webhooks.backoff(n, CONFIG) for n in range(1, 5)] == [2.0, 4.0, 5.0, 5.0]


def test_an_event_body_is_compact_sorted_json():
    """The body has id, type, time, project and data, keys sorted, no spaces."""
    body = webhooks.event_body("ev-1", "instance.running", "p1", 5.0, {"b": 1, "a": 2})
    assert body == '{"data":{"a":2,"b":1},"id":"ev-1","project":"p1","time":5.0,"type":"instance.running"}'


def test_a_marked_change_queues_one_delivery_per_hook_in_its_own_transaction():
    """terminate of a marked instance writes the state and both hooks' deliveries in one transaction."""
    store = hooked_store(hooks=2)
    effects = queue_one(store)
    change = [e for e in effects if isinstance(e, Transaction) and any(op.key == KEY for op in e.ops)]
    assert len(change) == 1 and sum(op.key == keys.WEBHOOK_PENDING for op in change[0].ops) == 2
    delivery = store.data[keys.webhook_delivery("ev-1.wh-0")]
    event = json.loads(delivery["body"])
    assert (event["type"], event["data"]["previous_state"], event["data"]["instance_id"]) == (
        "instance.shutting-down", "running", IID)
    assert store.data[keys.WEBHOOK_BACKLOG] == {"p1": "2"}


def test_an_unmarked_change_costs_no_round_trip():
    """An instance of a project without hooks at launch makes the same effects as before: now, the CAS, the record."""
    effects, _ = drive(instances.transition(record("running"), "terminate"), TinyStore({KEY: record("running")}))
    assert [type(e).__name__ for e in effects] == ["Now", "Transaction", "Record"]
    assert keys.WEBHOOK_PENDING not in {op.key for op in effects[1].ops}


def test_a_refused_change_queues_nothing():
    """A stale read (the guard fails) writes neither the change nor its event."""
    store = hooked_store()
    stale = {**store.data[KEY], "host": "h9"}
    _, moved = drive(instances.transition(stale, "terminate"), store)
    assert moved is None and not store.data.get(keys.WEBHOOK_PENDING)


def test_past_the_backlog_events_are_dropped_and_counted():
    """A project with MAX_BACKLOG deliveries pending gets no more; the drop is counted."""
    store = hooked_store(**{keys.WEBHOOK_BACKLOG: {"p1": str(webhooks.MAX_BACKLOG)}})
    queue_one(store)
    assert not store.data.get(keys.WEBHOOK_PENDING) and store.data[keys.WEBHOOK_STATS] == {"dropped": "1"}


def test_a_2xx_delivers_signed_and_gives_the_backlog_back():
    """A due delivery is POSTed with the hook's signature and event id, then removed and counted."""
    store = hooked_store()
    queue_one(store)
    effects, taken = drive(webhook_delivery.deliver_due(CONFIG), store, [204])
    (post,) = [e for e in effects if isinstance(e, HttpPost)]
    headers = dict(post.headers)
    assert taken == 1 and webhooks.verify("s0", post.body, headers[webhooks.SIGNATURE_HEADER])
    assert headers[webhooks.EVENT_ID_HEADER] == json.loads(post.body)["id"] == "ev-1"
    assert keys.webhook_delivery("ev-1.wh-0") not in store.data and store.data[keys.WEBHOOK_PENDING] == {}
    assert store.data[keys.WEBHOOK_BACKLOG] == {"p1": "0"} and store.data[keys.WEBHOOK_STATS]["delivered"] == "1"


def test_failures_back_off_then_give_up_at_max_attempts():
    """503, then no answer, are retried after 2 and 4 s; the third failure gives up (counted)."""
    store = hooked_store()
    queue_one(store)
    assert drive(webhook_delivery.attempt("ev-1.wh-0", CONFIG), store, [503])[1] == "retry"
    assert store.data[keys.WEBHOOK_PENDING]["ev-1.wh-0"] == 52.0
    assert drive(webhook_delivery.attempt("ev-1.wh-0", CONFIG), store, [DeliveryFailed("refused")])[1] == "retry"
    assert store.data[keys.WEBHOOK_PENDING]["ev-1.wh-0"] == 54.0
    assert drive(webhook_delivery.attempt("ev-1.wh-0", CONFIG), store, [500])[1] == "gave_up"
    stats = store.data[keys.WEBHOOK_STATS]
    assert (stats["gave_up"], stats["failed_attempts"], store.data[keys.WEBHOOK_PENDING]) == ("1", "3", {})


def test_a_claimed_delivery_is_not_attempted_twice_at_once():
    """A second worker that read the delivery before the first claimed it skips it."""
    store = hooked_store()
    queue_one(store)
    second = webhook_delivery.attempt("ev-1.wh-0", CONFIG)
    read = store.answer(next(second))  # it has read attempts 0
    assert drive(webhook_delivery.attempt("ev-1.wh-0", CONFIG), store, [200])[1] == "delivered"
    effects, outcome = drive(second, store, reply=read)
    assert outcome == "skipped" and not any(isinstance(e, HttpPost) for e in effects)


def test_a_removed_hook_cancels_its_deliveries():
    """Deliveries of a hook removed after they were queued are cancelled when due, not POSTed."""
    store = hooked_store()
    queue_one(store)
    drive(webhooks.remove("p1", f"{URL}0"), store)
    effects, outcome = drive(webhook_delivery.attempt("ev-1.wh-0", CONFIG), store)
    assert outcome == "cancelled" and not any(isinstance(e, HttpPost) for e in effects)
    assert store.data[keys.WEBHOOK_STATS]["cancelled"] == "1"


def test_registering_refuses_a_repeat_and_too_many():
    """The same URL twice is HookExists; past MAX_HOOKS_PER_PROJECT is QuotaExceeded; a bad project id is refused."""
    store = hooked_store(hooks=webhooks.MAX_HOOKS_PER_PROJECT)
    with pytest.raises(HookExists, match="already"):
        drive(webhooks.register("p1", f"{URL}0", "wh-x", "s", 1.0), store)
    with pytest.raises(QuotaExceeded):
        drive(webhooks.register("p1", "http://other/", "wh-x", "s", 1.0), store)
    with pytest.raises(InvalidParameterValue, match="project id"):
        drive(webhooks.register("p:1", "http://other/", "wh-x", "s", 1.0), store)


def test_listing_shows_no_secret_and_removing_takes_an_id_or_url():
    """hooks() lists id, project, URL; remove() by id, then an unknown one is NotFound."""
    store = hooked_store(hooks=2)
    listed = drive(webhooks.hooks(), store)[1]
    assert [(h["id"], h["url"]) for h in listed] == [("wh-0", f"{URL}0"), ("wh-1", f"{URL}1")]
    assert all("secret" not in h for h in listed)
    assert drive(webhooks.remove("p1", "wh-1"), store)[1] == "wh-1"
    with pytest.raises(NotFound):
        drive(webhooks.remove("p1", "wh-1"), store)


def test_receipts_count_duplicates_and_lag_from_the_event_time():
    """A second arrival of one id is a duplicate; lag is arrival time minus the event's time."""
    receipts = Receipts()
    body = webhooks.event_body("ev-1", "instance.running", "p1", 10.0, {}).encode()
    receipts.received(URL, body, 12.5)
    receipts.received(URL, body, 20.0)
    assert receipts.summary() == {"received": 1, "duplicates": 1, "lag_p50": 2.5, "lag_p95": 2.5, "lag_max": 2.5}


def test_a_webhook_outage_fault_is_a_kind_of_its_own():
    """{at, webhook_outage} validates, needs at, and says what it does."""
    assert Fault(at=30, webhook_outage=60).describe() == "web hook receivers down for 60 s"
    with pytest.raises(ValueError, match="needs at"):
        Fault(webhook_outage=60)
