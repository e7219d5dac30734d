"""Web hooks for real: the POST that delivers an event, and a receiver to deliver to.

``HttpPoster`` performs ``HttpPost`` (``common.performers.WebPerformer``) with
``http.client``.

*Features*: http and https (the system's trust store, certificates verified), one
connection per POST, the effect's timeout on connecting and on each read, the answer's
body read up to ``MAX_ANSWER_BYTES`` and dropped.

*Not supported*: redirects (a 3xx is an answer, which counts as a failed attempt:
following one could send a signed event to a host nobody registered), proxies, HTTP
keep-alive, client certificates. A URL that names no reachable server fails the
attempt (``DeliveryFailed``); the worker retries it.

``Receiver`` is a small web hook receiver on 127.0.0.1 (``http.server`` in a thread):
it checks each POST's signature with the secrets it is given, answers 503 while
``down`` and 500 with ``failure_probability``, and notes every event it takes in a
``common.webhooks.Receipts`` (ids, lag). ``run-scenario --mode real`` starts the
scenario's receivers with it, and the tests use it.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from common import webhooks
from common.effects import HttpPost
from common.errors import DeliveryFailed
from common.webhooks import Receipts

#: Bytes of an answer read before the connection is closed: the status is all we use.
MAX_ANSWER_BYTES = 64 * 1024
#: Largest body a Receiver takes (events are a few hundred bytes).
MAX_BODY_BYTES = 1024 * 1024


class HttpPoster:
    """Performs HttpPost; a ``common.performers.WebPerformer``. ``time_scale``: scenario
    seconds per wall second (the effect's timeout is in scenario seconds, as the runtime's
    Sleep and Call are)."""

    def __init__(self, time_scale: float = 1.0):
        self.time_scale = time_scale

    def post(self, agent, effect: HttpPost) -> int:
        timeout = effect.timeout / self.time_scale
        parts = urlsplit(effect.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context())
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            connection.request("POST", path, body=effect.body, headers=dict(effect.headers))
            answer = connection.getresponse()
            answer.read(MAX_ANSWER_BYTES)
            return answer.status
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, TLS, bad answer
            raise DeliveryFailed(f"{effect.url}: {type(e).__name__}: {e}") from None
        finally:
            connection.close()


class Receiver:
    """A web hook receiver on 127.0.0.1 (module docstring). ``url`` once started."""

    def __init__(self, secrets: dict[str, str] | None = None, failure_probability: float = 0.0,
                 clock=time.time, seed: int | None = None, receipts: Receipts | None = None):
        #: project -> the secret its hook for this receiver signs with (set before events come).
        self.secrets = dict(secrets or {})
        self.failure_probability = failure_probability
        self.clock = clock
        self.rng = random.Random(seed)
        #: Shared by the receivers of one run when given.
        self.receipts = receipts if receipts is not None else Receipts()
        #: Every event taken, in arrival order: (headers, parsed body).
        self.events: list[tuple[dict, dict]] = []
        self.posts = 0
        self.bad_signatures = 0
        #: While set, every POST is answered 503 (an outage).
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the receiver first"
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._answer(413)
                    return
                self._answer(receiver.take(dict(self.headers.items()), self.rfile.read(length)))

            def _answer(self, status):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def take(self, headers: dict, body: bytes) -> int:
        """One POST: -> the status to answer."""
        with self.lock:
            self.posts += 1
            if self.down.is_set():
                return 503
            if self.failure_probability and self.rng.random() < self.failure_probability:
                return 500
            try:
                event = json.loads(body)
                secret = self.secrets[event["project"]]
            except (ValueError, KeyError, TypeError):
                return 400
            if not webhooks.verify(secret, body, headers.get(webhooks.SIGNATURE_HEADER, "")):
                self.bad_signatures += 1
                return 401
            self.events.append((headers, event))
            self.receipts.received(self.url, body, self.clock())
            return 200

    def event_ids(self) -> list[str]:
        with self.lock:
            return [event["id"] for _, event in self.events]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
