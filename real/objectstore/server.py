"""Serving the object store: cheroot in the foreground (the daemon) or on a thread (tests)."""

from __future__ import annotations

import signal
import threading
import uuid

from real.objectstore.app import ObjectStoreApp
from real.objectstore.auth import Lookup
from real.objectstore.protocol import DEFAULT_PORT, STATUS, element, xml_document


def make_server(app, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 16):
    """A cheroot WSGI server for ``app`` (not yet listening); what cheroot refuses
    itself gets S3 error XML too."""
    from real.httpserver import xml_error_server

    return xml_error_server((host, port), app, s3_error_document, numthreads=threads,
                            server_name="novalab-objectstore", timeout=60, shutdown_timeout=5,
                            request_queue_size=1024)  # cheroot's 5 resets connections in a burst (real/api.py)


#: S3's codes for what the HTTP server itself refuses, by its status.
_HTTP_REFUSALS = {400: "InvalidRequest", 405: "MethodNotAllowed", 413: "EntityTooLarge", 414: "InvalidURI",
                  500: "InternalError", 501: "NotImplemented", 503: "ServiceUnavailable", 505: "HttpVersionNotSupported"}


def s3_error_document(status: int, message: str) -> tuple[int, str, bytes]:
    """The S3 error document for a refusal of the HTTP server (real.httpserver)."""
    code = _HTTP_REFUSALS.get(status, "InvalidRequest")
    if status == 413 and "header" in message.lower():
        code = "RequestHeaderSectionTooLarge"
    status = STATUS.get(code, status)
    body = xml_document("Error", element("Code", code) + element("Message", message)
                        + element("RequestId", uuid.uuid4().hex[:16].upper()), namespace=False)
    return status, "application/xml", body


def serve(app, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 16) -> None:
    """Serve ``app`` in the foreground until SIGTERM or SIGINT (the daemon form); requests
    in flight then get cheroot's shutdown timeout to finish. A server killed outright
    loses nothing stored: writes land by rename, and stale temporary files are swept at
    the next start."""
    server = make_server(app, host, port, threads)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="objectstore", daemon=True)
    thread.start()
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
    try:
        while thread.is_alive() and not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        thread.join(10)


class ObjectStoreServer:
    """An object store served from a background thread: for tests and daemons.

    ``port=0`` picks a free port; ``.url`` is the endpoint; ``.stop()`` (or leaving the
    ``with`` block) shuts it down within about ``poll_interval`` seconds (cheroot's
    serving loop wakes that often). ``middleware(app) -> app`` wraps the application
    (fault injection in tests). Other keywords go to ObjectStoreApp.
    """

    def __init__(self, root, lookup: Lookup, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 threads: int = 16, middleware=None, poll_interval: float = 0.05, **options):
        self.app = ObjectStoreApp(root, lookup, **options)
        served = middleware(self.app) if middleware is not None else self.app
        self._server = make_server(served, host, port, threads)
        self._server.expiration_interval = poll_interval
        self._server.prepare()  # binds now, so the port is known and taken
        self.host, self.port = self._server.bind_addr[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve, name=f"objectstore:{self.port}", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._server.stop()
            self._thread.join(10)
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
