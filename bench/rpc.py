"""RPC benchmark: our kombu transport vs oslo.messaging vs raw kombu, same broker, same run.

Run by hand, never by the test suite (needs RabbitMQ, and oslo.messaging for its rows):

    python bench/rpc.py [--seconds 5] [--repeat 1] [--url amqp://guest:guest@127.0.0.1:5672//]
                        [--workers 4] [--systems raw,ours,...] [--inproc] [--json FILE]

For every system the server runs in its own process (as a Nova service would; ``--inproc``
puts it in a thread of the benchmark process instead, sharing the GIL with the client)
and the client in this process, on one fresh topic per system:

* **call**: sequential round trips (``call`` and wait for the reply) for ``--seconds``
  after a short warm-up; round trips per second.
* **cast**: one client casts for ``--seconds``; the rate is casts published divided by the
  time until the server has consumed the last one (published + consumed per second).
  ``publish/s`` is the client side alone (casts / publishing time).

Systems:

* ``ours``: ``real.transport`` RpcClient/RpcServer (``--workers`` threads, prefetch 1,
  direct reply-to; every cast mandatory and confirmed before ``cast`` returns).
* ``ours-batch``: the same server; casts with ``cast(wait=False)`` and ``flush()`` every
  50 casts (batched confirms: unroutable casts are reported by ``flush``).
* ``ours-durable``, ``ours-durable-batch``: ``ours`` and ``ours-batch`` with durable
  delivery (``durable=True``: durable exchange and queues, persistent casts, so each
  confirm waits for the broker's disk), on a vhost of their own that the benchmark makes
  on the same broker (``real.vhosts``; a vhost that held the transient exchange refuses
  a durable one). What ``cloud.durable_delivery`` costs.
* ``ours-excl``: ``ours`` with ``reply_queue="exclusive"`` (one exclusive reply queue per
  client), the alternative to direct reply-to; measured to choose between them.
* ``oslo``: oslo.messaging ``get_rpc_transport`` + ``get_rpc_client`` / ``get_rpc_server``
  with a trivial endpoint and the ``threading`` executor (its rabbit driver publishes
  with confirms too).
* ``raw``: kombu ``Producer.publish`` (no confirms, not mandatory, no envelope) to the same
  exchange/queue layout and ``--workers`` kombu ``Consumer`` threads (prefetch 1, manual
  ack): the ceiling for cast. Its call is a hand-rolled direct reply-to round trip.
* ``raw-p100``: raw kombu with one consumer and prefetch 100, for scale (what the same
  broker and library do when the consumer does not ack one by one).

Systems run one after another, interleaved across ``--repeat`` rounds. Only ratios
measured in this run are meaningful: the table prints the absolute rates (best of the
rounds) and each ratio twice, best over best and the median of the per-round ratios
(steadier on a busy machine). Goals (from the issue): call >= oslo.messaging's; cast
>= 80 % of raw kombu.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

# oslo.messaging imports eventlet, which warns on import that it is deprecated
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a source tree that was never installed
    sys.path.insert(0, str(ROOT))

DEFAULT_URL = os.environ.get("NOVALAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
SYSTEMS = ("raw", "raw-p100", "ours", "ours-batch", "ours-durable", "ours-durable-batch", "ours-excl", "oslo")
#: (name, numerator system, denominator system, phase, goal) of each ratio reported.
RATIOS = [
    ("call ours/oslo", "ours", "oslo", "call", 1.0),
    ("cast ours/oslo", "ours", "oslo", "cast", None),
    ("cast ours/raw", "ours", "raw", "cast", 0.8),
    ("cast ours-batch/raw", "ours-batch", "raw", "cast", 0.8),
    ("cast ours/raw-p100", "ours", "raw-p100", "cast", None),
    ("cast ours-batch/raw-p100", "ours-batch", "raw-p100", "cast", None),
    ("call durable/transient", "ours-durable", "ours", "call", None),
    ("cast durable/transient", "ours-durable", "ours", "cast", None),
    ("cast durable/transient batch", "ours-durable-batch", "ours-batch", "cast", None),
    ("call direct/exclusive", "ours", "ours-excl", "call", None),
    ("cast direct/exclusive", "ours", "ours-excl", "cast", None),
]
FLUSH_EVERY = 50  # ours-batch: casts between flush() calls
WARMUP = 0.5
DRAIN_LIMIT = 120.0  # longest wait for the server to consume what was cast


# ==================================================================================
# servers (run in a child process or a thread; they count what they consume)
# ==================================================================================


def oslo_url(url):
    """oslo.messaging names the RabbitMQ (kombu) driver ``rabbit://``; ``amqp://`` is its AMQP 1.0 driver."""
    return "rabbit://" + url.split("://", 1)[1] if url.startswith("amqp://") else url


def _quiet_logging():
    logging.basicConfig(level=logging.WARNING)
    # oslo.messaging's rabbit driver closes channels with a consumer still attached:
    # py-amqp warns "Received method (60, 30) during closing channel" on every shutdown
    logging.getLogger("amqp").setLevel(logging.ERROR)


class Counter:
    """Consumed-message counter shared with the benchmark process."""

    def __init__(self, shared):
        self.shared = shared
        self.lock = threading.Lock()

    def add(self):
        with self.lock:
            self.shared.value += 1


def serve(system, url, topic, workers, shared, ready, stop):
    """Run one system's server until ``stop`` is set."""
    _quiet_logging()
    counter = Counter(shared)
    if system.startswith("ours"):
        from real.transport import RpcServer

        def handle(message):
            counter.add()
            return message.get("args")

        server = RpcServer(url, topic, "bench", handle, workers=workers, prefetch=1, durable=durable(system)).start()
        ready.set()
        stop.wait()
        server.stop()
    elif system == "oslo":
        import oslo_messaging as om
        from oslo_config import cfg

        class Endpoint:
            def ping(self, ctxt, **kwargs):
                counter.add()
                return kwargs

        transport = om.get_rpc_transport(cfg.CONF, url=oslo_url(url))
        server = om.get_rpc_server(transport, om.Target(topic=topic, server="bench"), [Endpoint()],
                                   executor="threading")
        server.start()
        ready.set()
        stop.wait()
        server.stop()
        server.wait()
        transport.cleanup()
    elif system in ("raw", "raw-p100"):
        import kombu

        n, prefetch = (1, 100) if system == "raw-p100" else (workers, 1)
        with kombu.Connection(url) as conn:  # declared before the client publishes
            _raw_entities(topic)[1](conn.channel()).declare()
        threads = [threading.Thread(target=_raw_consumer, args=(url, topic, prefetch, counter, stop), daemon=True)
                   for _ in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # let the consumers attach
        ready.set()
        stop.wait()
        for t in threads:
            t.join(5)
    else:
        raise ValueError(system)


def _raw_entities(topic):
    import kombu

    exchange = kombu.Exchange("nova", type="topic", durable=False, auto_delete=False)
    return exchange, kombu.Queue(topic, exchange=exchange, routing_key=topic, durable=False, auto_delete=False)


def _raw_consumer(url, topic, prefetch, counter, stop):
    import kombu

    _exchange, queue = _raw_entities(topic)
    with kombu.Connection(url) as conn:
        producer = kombu.Producer(conn.channel(), exchange=kombu.Exchange(""), serializer="json")

        def on_message(body, message):
            message.ack()
            counter.add()
            reply_to = message.properties.get("reply_to")
            if reply_to:
                producer.publish({"result": body.get("args"), "failure": None}, routing_key=reply_to,
                                 correlation_id=message.properties.get("correlation_id"))

        with kombu.Consumer(conn, [queue], callbacks=[on_message], prefetch_count=prefetch, accept=["json"]):
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass


# ==================================================================================
# clients
# ==================================================================================


def durable(system):
    return system.startswith("ours-durable")


class OursClient:
    def __init__(self, url, topic, reply_queue, batch=False, durable=False):
        from real.transport import RpcClient

        self.client = RpcClient(url, reply_queue=reply_queue, durable=durable)
        self.topic = topic
        self.batch = batch
        self.unflushed = 0

    def call(self):
        return self.client.call(self.topic, "ping", {"x": 1}, timeout=10)

    def cast(self):
        if not self.batch:
            self.client.cast(self.topic, "ping", {"x": 1})
            return
        self.client.cast(self.topic, "ping", {"x": 1}, wait=False)
        self.unflushed += 1
        if self.unflushed >= FLUSH_EVERY:
            self.client.flush()
            self.unflushed = 0

    def close(self):
        self.client.close()


class OsloClient:
    def __init__(self, url, topic):
        import oslo_messaging as om
        from oslo_config import cfg

        self.transport = om.get_rpc_transport(cfg.CONF, url=oslo_url(url))
        self.client = om.get_rpc_client(self.transport, om.Target(topic=topic), timeout=10)

    def call(self):
        return self.client.call({}, "ping", x=1)

    def cast(self):
        self.client.cast({}, "ping", x=1)

    def close(self):
        self.transport.cleanup()


class RawClient:
    """kombu Producer without confirms; call through direct reply-to by hand."""

    def __init__(self, url, topic):
        import kombu

        self.conn = kombu.Connection(url)
        self.conn.connect()
        exchange, _ = _raw_entities(topic)
        self.channel = self.conn.channel()
        self.producer = kombu.Producer(self.channel, exchange=exchange, serializer="json")
        self.topic = topic
        self.reply = None
        self.consumer = kombu.Consumer(self.channel, [kombu.Queue("amq.rabbitmq.reply-to")], no_ack=True,
                                       callbacks=[self._on_reply], accept=["json"])
        self.consumer.consume()

    def _on_reply(self, body, message):
        self.reply = body

    def call(self):
        self.reply = None
        self.producer.publish({"method": "ping", "args": {"x": 1}}, routing_key=self.topic,
                              reply_to="amq.rabbitmq.reply-to", correlation_id=uuid.uuid4().hex, declare=[])
        deadline = time.monotonic() + 10
        while self.reply is None:
            self.conn.drain_events(timeout=max(0.001, deadline - time.monotonic()))
        return self.reply["result"]

    def cast(self):
        self.producer.publish({"method": "ping", "args": {"x": 1}}, routing_key=self.topic, declare=[])

    def close(self):
        self.conn.release()


def make_client(system, url, topic):
    if system in ("ours", "ours-durable"):
        return OursClient(url, topic, "direct", durable=durable(system))
    if system in ("ours-batch", "ours-durable-batch"):
        return OursClient(url, topic, "direct", batch=True, durable=durable(system))
    if system == "ours-excl":
        return OursClient(url, topic, "exclusive")
    if system == "oslo":
        return OsloClient(url, topic)
    return RawClient(url, topic)


# ==================================================================================
# measurement
# ==================================================================================


def measure(system, url, seconds, workers, inproc):
    topic = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    if inproc:
        shared, ready, stop = _LocalValue(), threading.Event(), threading.Event()
        runner = threading.Thread(target=serve, args=(system, url, topic, workers, shared, ready, stop), daemon=True)
    else:
        shared, ready, stop = ctx.Value("q", 0, lock=False), ctx.Event(), ctx.Event()
        runner = ctx.Process(target=serve, args=(system, url, topic, workers, shared, ready, stop), daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.1):
        if not runner.is_alive() or time.monotonic() > deadline:
            stop.set()
            raise RuntimeError(f"{system}: server did not start")
    client = make_client(system, url, topic)
    try:
        # call: warm up, then sequential round trips
        end = time.perf_counter() + WARMUP
        while time.perf_counter() < end:
            client.call()
        n, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            client.call()
            n += 1
        call_rate = n / (time.perf_counter() - t0)
        # cast: publish for `seconds`, then wait until the server consumed all of them
        base = shared.value
        n, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            for _ in range(50):
                client.cast()
            n += 50
        t_pub = time.perf_counter() - t0
        limit = time.perf_counter() + DRAIN_LIMIT
        while shared.value - base < n and time.perf_counter() < limit:
            time.sleep(0.0005)
        consumed = shared.value - base
        t_all = time.perf_counter() - t0
        if consumed < n:
            print(f"{system}: only {consumed} of {n} casts consumed within {DRAIN_LIMIT:g} s", file=sys.stderr)
        cast_rate = consumed / t_all
        publish_rate = n / t_pub
    finally:
        client.close()
        stop.set()
        runner.join(30)
        _cleanup(url, topic)
    return {"call": call_rate, "cast": cast_rate, "publish": publish_rate, "casts": n}


class _LocalValue:
    value = 0


def _cleanup(url, topic):
    from real.transport import delete_queues

    try:
        delete_queues(url, [topic, f"{topic}.bench"])
    except Exception as e:  # a leftover queue is harmless to the numbers; say so
        print(f"cleanup of {topic}: {e!r}", file=sys.stderr)


def _print_ratios(runs: dict, best: dict) -> dict:
    """Print each ratio of RATIOS both systems were measured for; -> the ratios."""
    ratios = {}
    print(f"{'ratio':<28} {'best/best':>9} {'median of rounds':>17}")
    for name, num, den, phase, goal in RATIOS:
        if num not in best or den not in best:
            continue
        of_best = best[num][phase] / best[den][phase]
        # the same round's two numbers were measured a few seconds apart: on a busy
        # machine their ratio is steadier than the ratio of two separately picked bests
        rounds = [a[phase] / b[phase] for a, b in zip(runs[num], runs[den], strict=True)]
        median = statistics.median(rounds)
        ratios[name] = {"best": of_best, "median": median, "rounds": rounds}
        verdict = ""
        if goal is not None:
            met = "met" if min(of_best, median) >= goal else "MISSED" if max(of_best, median) < goal else "borderline"
            verdict = f"   goal >= {goal:g}: {met}"
        print(f"{name:<28} {of_best:9.2f} {median:17.2f}{verdict}")
    return ratios


def _print_versions() -> None:
    print(f"\npython {platform.python_version()}, cpus {os.cpu_count()}", end="")
    try:
        import kombu
        print(f", kombu {kombu.__version__}", end="")
        from importlib.metadata import version

        import oslo_messaging  # noqa: F401
        print(f", oslo.messaging {version('oslo.messaging')}", end="")
    except ImportError:
        pass
    print()


def _durable_vhost(url, systems):
    """A vhost of the benchmark's own for the durable systems: -> (its name, its URL), or
    (None, None), those systems dropped from ``systems`` saying why, when none can be made."""
    if not any(durable(s) for s in systems):
        return None, None
    from real import vhosts

    name = f"novalab-bench-{uuid.uuid4().hex[:8]}"
    try:
        made = vhosts.make_vhost(url, name)
    except vhosts.VhostError as e:
        made, why = None, str(e)
    else:
        why = "the broker is not local or rabbitmqctl is missing"
    if made is None:
        print(f"ours-durable*: skipped (no vhost of their own on {url}: {why})", file=sys.stderr)
        systems[:] = [s for s in systems if not durable(s)]
        return None, None
    return name, made[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each call and cast phase")
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--workers", type=int, default=4, help="server worker threads (ours and raw)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; best rates and median ratios are reported")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--inproc", action="store_true", help="run servers in a thread of this process")
    ap.add_argument("--json", help="also write every number to this file")
    args = ap.parse_args(argv)
    _quiet_logging()
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    if "oslo" in systems:
        try:
            import oslo_messaging  # noqa: F401  (whether it imports is the question)
        except ImportError as e:
            print(f"oslo: skipped ({e}; pip install oslo.messaging)", file=sys.stderr)
            systems.remove("oslo")

    vhost, durable_url = _durable_vhost(args.url, systems)
    runs = {s: [] for s in systems}
    try:
        for r in range(args.repeat):
            for s in systems:  # interleaved, so drift in the machine hits every system alike
                print(f"[{r + 1}/{args.repeat}] {s} ...", file=sys.stderr, flush=True)
                url = durable_url if durable(s) else args.url
                runs[s].append(measure(s, url, args.seconds, args.workers, args.inproc))
    finally:
        if vhost is not None:
            from real import vhosts

            vhosts.delete_vhost(vhost)
    best = {s: {k: max(run[k] for run in v) for k in ("call", "cast", "publish")} for s, v in runs.items() if v}

    print()
    print(f"RPC over RabbitMQ, {args.seconds:g} s per phase, best of {args.repeat}, "
          f"servers {'in-process' if args.inproc else 'in a child process'}, workers={args.workers}")
    print(f"{'system':<18} {'call/s':>9} {'cast/s':>9} {'publish/s':>10}")
    for s, b in best.items():
        print(f"{s:<18} {b['call']:>9.0f} {b['cast']:>9.0f} {b['publish']:>10.0f}")
    print()
    ratios = _print_ratios(runs, best)
    _print_versions()
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "best": best, "ratios": ratios},
                                              indent=2))


if __name__ == "__main__":
    main()
