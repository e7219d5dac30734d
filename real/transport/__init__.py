"""RPC over RabbitMQ with kombu: the 2010 Nova topology, with timeouts and confirms.

Every service consumes two queues on the topic exchange ``nova``: the shared topic
``T`` (all servers of the kind compete for it) and its own ``T.<host>``. Each queue is
bound with exactly its own name as routing key. Bodies are the envelope of
:mod:`common.rpc` (JSON text); replies are ``{"result": ..., "failure": ...}``. The
server behaves like ``sim/services.py``: decode, ack by the method's policy, handle,
reply; poison messages are acked once, logged once and answered, never requeued.

Features
========

* Exchange ``nova`` (type ``topic``), one queue per topic and per ``topic.<host>``,
  exact bindings, competing consumers on the shared topic. Names containing ``*`` or
  ``#`` are refused (they would become wildcard bindings).
* ``RpcClient.cast``: published *mandatory* on a channel in publisher-confirm mode and
  returns once the broker confirmed it; raises ``Unroutable`` when no queue is bound
  (``basic.return`` arrives before the confirm) or the broker refused it (``basic.nack``).
  ``cast(..., wait=False)`` batches confirms (at most ``window`` in flight);
  ``flush()`` waits for them and raises ``Unroutable`` naming the casts that failed.
* ``RpcClient.call``: the same publish plus ``_msg_id``; the reply comes back through
  RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``, default) or a per-client
  exclusive queue (``reply_queue="exclusive"``), matched by correlation id. Raises
  ``RemoteError(exc_type, value)`` when the callee failed, ``RpcTimeout`` after
  ``timeout`` seconds (2010 waited forever), ``Unroutable`` when nothing is bound. A
  reply that comes after its call gave up is dropped and counted in ``late_replies``.
* ``RpcServer``: ``workers`` threads, each with its own connection and channel (kombu
  and py-amqp objects are not thread-safe), each consuming ``T`` and ``T.<host>`` with
  manual acks and a channel-wide ``basic.qos`` prefetch. ``handle(message)`` runs in the
  worker thread, so concurrency is bounded by ``workers``.
* Poison: any failure to decode or dispatch a delivery is answered (when a caller
  waits), logged once and acked, never requeued. A worker thread that dies anyway is
  replaced, at most ``MAX_WORKER_RESTARTS`` times; then ``failed`` is set and
  ``on_failed`` called, so its owner stops heartbeating instead of looking healthy.
* Ack policy from :func:`common.rpc.ack_policy`: ``ON_RECEIPT`` acks before ``handle``,
  ``ON_COMPLETION`` after it (a crash mid-method redelivers with ``redelivered=True``).
* Reconnect: a worker that loses its connection (broker restart, socket error, missed
  heartbeats) reconnects with exponential backoff 0.1 s .. 5 s and re-declares the
  exchange, queues, bindings, qos and consumers. AMQP heartbeats (10 s) on server
  connections, kept up by a helper thread while a handler runs long.
* ``queue_stats`` / ``queue_depths``: ready-message and consumer counts by passive
  declare, for the run report. ``delete_queues`` for tests and tear-down.

Design choices
==============

* **Durable delivery is a setting** (``durable``; a deployment's ``durable_delivery``,
  on by default in ``deploy`` and real runs). On: the exchange and the queues are
  durable and casts persistent (delivery mode 2), so a confirmed cast is on the broker's
  disk and a broker restart (even ``kill -9``) redelivers it; a client told "accepted"
  does not lose its request (one replayed after the build timeout failed its instance
  finds it in ``error`` and does nothing). Call requests stay transient even then: the caller's reply
  address (direct reply-to) dies with its connection, so replaying the request after a
  restart would run work whose answer nobody can receive (the caller was already told
  RpcTimeout); replies are transient too. Off, as in 2010 (``TopicConsumer`` had
  ``durable = False``): a restart loses every queued message and the build timeout
  catches what that leaves behind. Every process of a deployment must use the same
  setting (the broker refuses a declaration with the other ``durable``: PRECONDITION_FAILED,
  which the error message explains). What it costs: a confirm waits for the message to
  reach the disk (bench/rpc.py, ``ours-durable`` against ``ours``; README).
* **A confirm per cast by default; batching only on request.** ``cast`` must say
  *synchronously* whether the message was routed (the ``Cast`` effect raises
  ``Unroutable``), which needs the broker's answer for that very message: one confirm
  round trip per cast (bench/rpc.py: ~0.7-0.85x raw kombu publish+consume on 2 cores).
  Bulk senders that can take the error later use ``wait=False`` + ``flush()`` (~1x raw).
  The client tracks confirms itself (``basic.ack``/``basic.nack`` events, ``message_id``
  on the message to match a ``basic.return``) rather than py-amqp's
  ``basic_publish_confirm``, so a call does not wait for its confirm before waiting for
  its reply, and publishes with ``send_method`` (see :func:`real.transport.wire.send_publish`).
* **Direct reply-to instead of a queue per call.** 2010 declared a direct exchange and
  an auto-delete queue named after every ``msg_id`` (three round trips and two broker
  objects per call). Direct reply-to needs no declaration at all, cannot be deleted or
  expire under a living caller (oslo.messaging's reply queues can: A8), and a reply to
  a caller that is gone is dropped by the broker. ``reply_queue="exclusive"`` (one
  server-named exclusive queue per client connection) is kept for comparison: the bench
  measured no speed difference beyond noise (0.92-1.09x), so robustness decided.

Not supported
=============

* Thread-safety of ``RpcClient``: one client per thread (checked: another thread gets
  ``RuntimeError``). ``RpcServer`` methods may be called from any one thread.
* Dead-letter exchanges (poison messages are
  acked and dropped after a WARNING and an error reply), queue TTLs and expiry: a queue
  of a host that is gone for good stays and keeps what is sent to it.
* Fanout (2010 had none), wildcard bindings, several exchanges.
* Redelivery dedup: a redelivered ``ON_COMPLETION`` message is handled again; handlers
  are idempotent (reliability A2/A3), the transport keeps no msg-id cache.
* Flow control beyond timeouts: when the broker blocks publishers (memory alarm) a cast
  fails after the confirm timeout (10 s) instead of waiting.
* The broker's consumer delivery-ack timeout (30 min default) for ``ON_COMPLETION``
  handlers that run longer than that.
* With ``ON_RECEIPT`` the prefetch slot is free while the handler runs, so each worker
  may hold one more delivery (unacked, requeued if it dies) than it is handling.
* TLS and connection URLs with several hosts (kombu would accept them; untested).

Connection string
=================

``amqp://guest:guest@127.0.0.1:5672//`` (kombu/py-amqp URL: user, password, host, port,
virtual host after the third slash; ``//`` is the default vhost ``/``).
"""

from real.transport.admin import delete_queues, publish_raw, queue_depths, queue_stats
from real.transport.client import RpcClient
from real.transport.server import RpcServer
from real.transport.wire import DIRECT_REPLY_TO, EXCHANGE, exchange, topic_queue

__all__ = [
    "DIRECT_REPLY_TO",
    "EXCHANGE",
    "RpcClient",
    "RpcServer",
    "delete_queues",
    "exchange",
    "publish_raw",
    "queue_depths",
    "queue_stats",
    "topic_queue",
]
