"""The EC2 API server: ``common.ec2`` over HTTP, a WSGI application served by cheroot.

``ApiApp`` is the WSGI application. For each request it reads the request (with a
bound on its size), drives ``Ec2Api.handle`` with a ``RealRuntime`` in the server's
worker thread, writes the answer, and logs one access line to stderr. ``ApiServer``
runs it on cheroot in a background thread, together with the build-timeout reaper,
the API's periodic task. ``serve()`` runs an ApiServer until SIGTERM or SIGINT, as
``novalab api`` does.

Why cheroot (CherryPy's server: maintained, pure Python, production use): it is the
server ``real.objectstore`` already uses, so the project has one HTTP server. It
passes the raw request target (``REQUEST_URI``), which Signature V4 signs. It streams
the body to us, so our own size bound decides before anything is read. It binds
before serving (a background server on a free port knows its port), and it has a
thread-safe ``stop()``. Its pool of worker threads is bounded, and each worker drives
one request's generator with its own RPC client. waitress would also do, but it spools
bodies itself and has no public way to stop a server from another thread. gunicorn
forks and cannot be embedded.

*Features*

- ``POST`` (form body) or ``GET`` (query string) on ``/services/Cloud`` (a trailing
  slash is accepted), with EC2 signature version 2 or 4. boto3's EC2 client works
  unmodified with ``endpoint_url="http://HOST:8773/services/Cloud"``, any region, and
  ``aws_access_key_id="<access key>:<project>"``. Every other path gets 404 and every
  other method 405, both as EC2 error documents.
- The actions of ``common.ec2.ACTIONS``: RunInstances, DescribeInstances,
  TerminateInstances, RebootInstances, DescribeImages, CreateKeyPair, DescribeKeyPairs,
  DeleteKeyPair, AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
  DescribeAddresses, DescribeAvailabilityZones and GetConsoleOutput.
- A bound on request size (``MAX_REQUEST_BYTES``, 256 KiB; 16 KiB of user data is
  about 22 KiB in base64). A bigger body gets a 413 EC2 error document: a declared
  length is refused before anything is read, and a chunked body is read up to one byte
  past the bound. As a backstop, cheroot itself refuses bodies over twice the bound.
  Headers are bounded to 64 KiB. What cheroot refuses itself (oversized or malformed
  HTTP) is answered with an EC2 error document too (real.httpserver).
- Each request gets an id (a UUID4): the ``requestId``/``RequestID`` of the answer, the
  ``x-amzn-RequestId`` header and the access log's last field. One access line per
  request goes to stderr: ``ADDRESS - USER [TIME] "METHOD URI PROTOCOL" STATUS BYTES
  ACTION CODE SECONDS REQUEST-ID`` (``-`` where unknown).
- Key pairs are made here. The ``GenerateKeyPair`` effect is performed with the
  ``cryptography`` package: RSA 2048 in PKCS#1 PEM (as EC2 hands it out), or Ed25519 in
  OpenSSH format.
- The build-timeout reaper runs ``CloudController.reap_stuck_builds`` and
  ``reap_leftovers`` (quota reservations past their deadline, addresses whose release
  never ran, one project's usage reconciled) every ``reap_interval`` seconds in its own thread. What it gives back or
  corrects is logged; a failing pass is logged, and the next period tries again.
- ``ApiServer.stop()`` stops cleanly. New requests get 503 while the ones in flight
  finish (bounded by ``STOP_TIMEOUT``). Then cheroot stops its workers and closes the
  socket.
- ``build_api(config, ...)`` assembles an ``Ec2Api`` for a deployment. It takes the
  store, the broker and the LDAP directory (``ldap_*``) from the daemon configuration,
  and adds the key pair generator. It refuses to start, with StartupError, when Redis,
  RabbitMQ or LDAP do not answer.

*Not supported*

- TLS: put a terminating proxy in front. ``X-Forwarded-*`` headers are ignored (not
  trusted), so the access log shows the peer's address.
- The rest of 2010's API server: the version list at ``/``, ``/services/Admin``,
  ``/cloudpipe``, the metadata service (``/latest/...``), and the OpenStack API.
- ``ClientToken`` idempotency (boto3 sends one with RunInstances; it is accepted and
  ignored), filters, tags, VPC, and security groups other than ``default``.
- A clock other than the wall clock in ``build_api``/``novalab api``: the API checks
  request timestamps against its runtime's clock, so ``time_scale`` must be 1 there.
  (``run-scenario --mode real`` runs an ApiServer on its compressed clock; its clients,
  ``real.ec2_client``, stamp their requests with that same clock.)

*Connection string*

``http://HOST:PORT/services/Cloud``. The default port is 8773 (2010's ``cc_port``);
``ApiServer(port=0)`` takes a free port and reports it in ``.url``.
"""

from __future__ import annotations

import datetime
import logging
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from common.cloud import DEFAULT_INSTANCE_TYPES, CloudConfig, CloudController, Quota
from common.context import SYSTEM
from common.ec2 import Ec2Api, HttpRequest, HttpResponse
from common.ec2.render import render_error
from common.effects import DirectoryEffect, KeyPairEffect
from common.errors import NovaError
from common.scheduler import QUEUE
from real import images as image_store
from real.outage import Outage
from real.runner import Agent, RealRuntime

log = logging.getLogger(__name__)

DEFAULT_PORT = 8773
PATHS = ("/services/Cloud", "/services/Cloud/")
#: Largest request body read (module docstring).
MAX_REQUEST_BYTES = 256 * 1024
#: Bytes of a refused chunked body read and dropped before answering: a client still
#: sending when we refuse reads our answer only if we take the rest of its body first
#: (closing on unread data resets the connection); past this we close on it anyway.
REFUSED_BODY_DRAIN = 4 * MAX_REQUEST_BYTES
#: Largest request header block (cheroot enforces it).
MAX_HEADER_BYTES = 64 * 1024
#: Worker threads: requests handled at once (each may wait on an RPC call).
THREADS = 8
#: Seconds cheroot's serving loop may sleep before it notices stop().
POLL_INTERVAL = 0.2
#: Listen backlog: connections the kernel queues before cheroot accepts them. cheroot's
#: default, 5, resets connections when a burst of clients connects at once (64 workload
#: threads of run-scenario --mode real did); the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
#: Seconds stop() waits for requests in flight, then for the worker threads.
STOP_TIMEOUT = 15.0
#: RSA modulus size of generated key pairs (EC2's).
RSA_BITS = 2048


def _discard(stream, limit: int) -> None:
    """Read and drop at most ``limit`` bytes of ``stream`` (a refused body)."""
    while limit > 0:
        chunk = stream.read(min(limit, 64 * 1024))
        if not chunk:
            return
        limit -= len(chunk)


class StartupError(RuntimeError):
    """The API cannot start; the message names the service that is missing."""


# ---------------------------------------------------------------------------
# Key pairs (the GenerateKeyPair effect)


class KeyPairMaker:
    """Performs KeyPairEffect (GenerateKeyPair) with the ``cryptography`` package; a
    ``common.performers.KeyPairGenerator``."""

    def generate(self, key_type: str, comment: str) -> tuple[str, str]:
        """-> (private key PEM, OpenSSH public key line). ValueError for another type."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            private_format = serialization.PrivateFormat.TraditionalOpenSSL
        elif key_type == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
            private_format = serialization.PrivateFormat.OpenSSH
        else:
            raise ValueError(f"cannot make a key of type {key_type!r}")
        private = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        if comment:
            public = f"{public} {comment}"
        return private, public


def install_keypairs(runtime: RealRuntime) -> None:
    runtime.register(KeyPairEffect, KeyPairMaker())


# ---------------------------------------------------------------------------
# The WSGI application


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ApiApp:
    """The WSGI application: ``/services/Cloud`` -> ``api.handle`` on ``runtime``."""

    def __init__(self, api: Ec2Api, runtime: RealRuntime, *, max_request_bytes: int = MAX_REQUEST_BYTES,
                 access_log=None):
        self.api = api
        self.runtime = runtime
        self.max_request_bytes = max_request_bytes
        self.access_log = access_log or _stderr_line
        self.agent = Agent("api")
        self.draining = False
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled; False when ``timeout`` ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def __call__(self, environ, start_response):
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        with self._lock:
            self._in_flight += 1
        try:
            response = self._respond(environ, request_id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("x-amzn-RequestId", request_id),
        ]
        if response.status == 405:
            headers.append(("Allow", "GET, POST"))
        start_response(f"{response.status} {_reason(response.status)}", headers)
        self._log(environ, response, request_id, time.monotonic() - started)
        return [response.body]

    def _error(self, status: int, code: str, message: str, request_id: str) -> HttpResponse:
        return HttpResponse(status, render_error(code, message, request_id), code=code)

    def _respond(self, environ, request_id: str) -> HttpResponse:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path not in PATHS:
            return self._error(404, "InvalidURI", f"no such resource: {path[:200]}", request_id)
        if method not in ("GET", "POST"):
            return self._error(405, "UnsupportedHttpVerb", f"{method[:20]} is not supported; use GET or POST",
                               request_id)
        if self.draining:
            return self._error(503, "ServiceUnavailable", "the API is shutting down", request_id)
        try:
            length = int(environ["CONTENT_LENGTH"]) if environ.get("CONTENT_LENGTH") else None
        except ValueError:
            return self._error(400, "InvalidParameterValue", "Content-Length is not a number", request_id)
        too_big = f"the request body is over the limit of {self.max_request_bytes} bytes"
        if length is not None and not 0 <= length <= self.max_request_bytes:
            return self._error(413, "RequestEntityTooLarge", too_big, request_id)
        if length is None and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(self.max_request_bytes + 1)
            if len(body) > self.max_request_bytes:
                _discard(environ["wsgi.input"], REFUSED_BODY_DRAIN)
                return self._error(413, "RequestEntityTooLarge", too_big, request_id)
        else:
            body = environ["wsgi.input"].read(length) if length else b""
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
        raw_path = raw_uri.split("?", 1)[0] if raw_uri.startswith("/") else quote(path, safe="/~!$&'()*+,;=:@")
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        request = HttpRequest(
            method=method, path=raw_path, query=environ.get("QUERY_STRING", ""), headers=headers, body=body,
            request_id=request_id, remote_address=environ.get("REMOTE_ADDR", ""),
        )
        try:
            return self.runtime.drive(self.agent, self.api.handle(request))
        except Exception:  # a bug or an unexpected failure: never a stack trace to the client
            log.exception("request %s failed", request_id)
            return self._error(500, "InternalError", "an internal error occurred; see the API log for "
                               f"request {request_id}", request_id)

    def _log(self, environ, response: HttpResponse, request_id: str, seconds: float) -> None:
        uri = environ.get("REQUEST_URI") or (environ.get("PATH_INFO", "") + (
            "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""))
        when = datetime.datetime.now(datetime.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
        line = (f'{environ.get("REMOTE_ADDR", "-")} - {response.user or "-"} [{when}] '
                f'"{environ.get("REQUEST_METHOD", "-")} {uri[:300]} {environ.get("SERVER_PROTOCOL", "-")}" '
                f"{response.status} {len(response.body)} {response.action or '-'} {response.code or '-'} "
                f"{seconds:.3f}s {request_id}")
        try:
            self.access_log(line)
        except Exception:  # a broken log must not break the API
            log.exception("cannot write the access log")


#: EC2's codes for what the HTTP server itself refuses, by its status.
_HTTP_REFUSALS = {413: "RequestEntityTooLarge", 500: "InternalError", 501: "UnsupportedHttpVerb",
                  503: "Unavailable"}


def ec2_error_document(status: int, message: str) -> tuple[int, str, bytes]:
    """The EC2 error document for a refusal of the HTTP server (real.httpserver)."""
    code = _HTTP_REFUSALS.get(status, "InvalidRequest")
    return status, "text/xml", render_error(code, message, str(uuid.uuid4()))


# ---------------------------------------------------------------------------
# The build-timeout reaper


class Reaper:
    """``cloud.reap_stuck_builds`` every ``interval`` scenario seconds, in a thread."""

    def __init__(self, runtime: RealRuntime, cloud: CloudController, interval: float):
        self.runtime = runtime
        self.cloud = cloud
        self.interval = interval
        self.agent = Agent("api-reaper")
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self):
        touched = self.runtime.drive(self.agent, self.cloud.reap_stuck_builds(SYSTEM))
        self.runtime.drive(self.agent, self.cloud.expire_client_tokens(SYSTEM))
        leftovers = self.runtime.drive(self.agent, self.cloud.reap_leftovers(SYSTEM))
        self.passes += 1
        if touched:
            log.warning("reaper: settled %d instances past their build deadline: %s", len(touched),
                        ", ".join(touched))
        if leftovers["reservations"] or leftovers["addresses"] or leftovers["corrections"]:
            log.warning("reaper: gave back %d quota reservations past their deadline and %d addresses of settled "
                        "instances; quota usage corrected by %s", leftovers["reservations"], leftovers["addresses"],
                        leftovers["corrections"] or "nothing")
        return touched

    def start(self) -> Reaper:
        outage = Outage(log, "reaper: a pass")

        def loop():
            while not self._stop.wait(self.interval / self.runtime.time_scale):
                outage.run(self.run_once)

        self._thread = threading.Thread(target=loop, name="api-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


# ---------------------------------------------------------------------------
# The server


class ApiServer:
    """The API on cheroot in a background thread. ``port=0`` picks a free port;
    ``.url`` is the endpoint for boto3. A context manager (start, then stop)."""

    def __init__(self, api: Ec2Api, runtime: RealRuntime, *, host: str = "127.0.0.1", port: int = 0,
                 threads: int = THREADS, max_request_bytes: int = MAX_REQUEST_BYTES,
                 reap_interval: float | None = None, access_log=None):
        self.api = api
        self.runtime = runtime
        self.host = host
        self.port = port
        self.threads = threads
        self.app = ApiApp(api, runtime, max_request_bytes=max_request_bytes, access_log=access_log)
        self.reaper = Reaper(runtime, api.cloud, reap_interval) if reap_interval else None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/services/Cloud"

    def start(self) -> ApiServer:
        from real.httpserver import xml_error_server

        server = xml_error_server((self.host, self.port), self.app, ec2_error_document, numthreads=self.threads,
                                  server_name="novalab-api", timeout=60, shutdown_timeout=int(STOP_TIMEOUT),
                                  request_queue_size=LISTEN_BACKLOG)
        server.max_request_header_size = MAX_HEADER_BYTES
        server.max_request_body_size = 2 * self.app.max_request_bytes
        server.expiration_interval = POLL_INTERVAL
        server.prepare()  # binds now: the port is known and taken
        self._server = server
        self.port = server.bind_addr[1]
        self._thread = threading.Thread(target=server.serve, name=f"api:{self.port}", daemon=True)
        self._thread.start()
        if self.reaper is not None:
            self.reaper.start()
        log.info("EC2 API on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self.reaper is not None:
            self.reaper.stop()
        self.app.draining = True
        if not self.app.wait_idle(STOP_TIMEOUT):
            log.warning("stopping with %d requests still in flight", self.app.in_flight)
        self._server.stop()
        self._thread.join(STOP_TIMEOUT)
        self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(api: Ec2Api, runtime: RealRuntime, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT,
          threads: int = THREADS, reap_interval: float | None = 60.0, max_request_bytes: int = MAX_REQUEST_BYTES) -> int:
    """Serve until SIGTERM or SIGINT (call from the main thread). Returns 0."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server = ApiServer(api, runtime, host=host, port=port, threads=threads, reap_interval=reap_interval,
                       max_request_bytes=max_request_bytes).start()
    print(f"novalab api: serving EC2 on {server.url}", file=sys.stderr, flush=True)
    stopping.wait()
    log.info("stopping")
    server.stop()
    return 0


# ---------------------------------------------------------------------------
# Assembling a deployment's API


def build_api(config, *, scheduler: str = QUEUE, instance_types: dict | None = None,
              quotas: dict | None = None, default_quota: Quota = Quota(), network_call_timeout: float = 30.0,
              region: str = "nova", zone: str = "nova"):
    """-> (Ec2Api, RealRuntime, close) for the deployment of daemon configuration
    ``config`` (real.config.DaemonConfig: Redis, RabbitMQ, key prefix, network layout,
    build timeout, and the directory: ``ldap_url``, ``ldap_bind_dn`` (none:
    ``cn=admin,<ldap_root>``), ``ldap_password``, ``ldap_root``, ``ldap_timeout``; and
    the object store RegisterImage reads objects from: ``s3_url``, ``s3_access_key``,
    ``s3_secret_key``, an admin's keys; none: RegisterImage answers ServiceUnavailable).

    ``close()`` releases the connections. Raises StartupError when Redis, RabbitMQ or
    the directory does not answer, or when ``config.time_scale`` is not 1.
    """
    from real import directory as ldap
    from real import site
    from real.daemon import network_manager
    from real.startup import StartupError as DaemonStartupError
    from real.startup import connect

    try:
        site.check(config, "api")  # first: production names every setting to fix at once
    except DaemonStartupError as e:
        raise StartupError(str(e)) from None
    if config.time_scale != 1:
        raise StartupError(f"the EC2 API runs on the wall clock; time_scale is {config.time_scale}, not 1")
    try:
        store, runtime = connect(config)
    except DaemonStartupError as e:
        raise StartupError(str(e)) from None
    try:
        directory, connection = ldap.from_config(config)
    except (NovaError, ValueError) as e:
        runtime.close()
        store.close()
        raise StartupError(f"cannot use the directory at {config.ldap_url}: {e}") from None
    runtime.register(DirectoryEffect, connection)

    def close():
        runtime.close()
        connection.close()
        store.close()

    try:
        runtime.drive(Agent("api"), directory.get_user("novalab-startup-check"))
    except NovaError as e:
        close()
        raise StartupError(f"cannot use the directory at {config.ldap_url}: {e}") from None
    install_keypairs(runtime)
    image_store.install_client(runtime, config.s3_url, (config.s3_access_key, config.s3_secret_key))
    cloud_config = CloudConfig(
        scheduler=scheduler, quotas=dict(quotas or {}), default_quota=default_quota,
        network_call_timeout=network_call_timeout, build_timeout=config.build_timeout,
        service_down_time=config.service_down_time,
        instance_types=dict(instance_types or DEFAULT_INSTANCE_TYPES),
    )
    cloud = CloudController(cloud_config, network_manager(config))
    return Ec2Api(cloud, directory, region=region, zone=zone), runtime, close


def serve_config(config) -> int:
    """``novalab api``: serve the API of the deployment that ``config`` describes. That
    is a real.config.DaemonConfig (build_api) with the settings ``api_listen``,
    ``api_port``, ``api_threads``, ``api_dispatch`` (``queue`` or ``scheduler``)
    and ``quota_instances``/``quota_cores``/
    ``quota_floating_ips``. Returns the exit status: 0, or 2 when a service the API
    needs does not answer."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s api %(levelname)s %(name)s: %(message)s")
    try:
        api, runtime, close = build_api(
            config, scheduler=QUEUE if config.api_dispatch == "queue" else config.scheduler_driver,
            default_quota=Quota(config.quota_instances, config.quota_cores, config.quota_floating_ips),
        )
    except StartupError as e:
        print(f"novalab api: refusing to start: {e}", file=sys.stderr)
        return 2
    try:
        return serve(api, runtime, host=config.api_listen, port=config.api_port, threads=config.api_threads,
                     reap_interval=config.periodic_interval)
    finally:
        close()
