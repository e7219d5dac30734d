"""A small EC2 Query API client: signed requests (Signature Version 4) over http.client.

``run-scenario --mode real`` drives its workload through the API with it, one client
per workload thread and project. It signs exactly as boto3 does (``POST`` of a form
body, ``Authorization: AWS4-HMAC-SHA256 ...``, ``X-Amz-Date``), so the API cannot tell
it from boto3 except by its User-Agent. It sends what ``common.ec2.inprocess.signed_request``
builds: the simulation builds its requests with the same function, and the server
verifies them with the same signing module (common/signing.py).

Why not boto3 here: the request timestamp. A real run compresses time (``time_scale``),
and every process of the run, the API included, reads the compressed clock; a client
of the run must stamp its requests with that clock too (``clock``), or the API's
15-minute freshness check would refuse them once the run has been going for
15 minutes of scenario time. botocore stamps requests with the wall clock and offers no
way to change it. The client is also lighter: run-scenario --mode real reports the
numbers (README, "Use it like a cloud").

*Features*: ``call(action, params)`` -> the response's XML root, or Ec2Error with the
EC2 code, message, HTTP status and request id; helpers for the workload's actions
(RunInstances, TerminateInstances, DescribeInstances, AllocateAddress,
AssociateAddress, DisassociateAddress, ReleaseAddress). One keep-alive connection per
client; a request on a reused connection that the server had already closed is sent
again once on a new connection (nothing was handled: the server closes idle
connections only between requests). Not thread-safe: one client per thread.

*Not supported*: HTTPS, retries of any other failure (a timeout is an Ec2Error with
code ``RequestTimeout`` and status 0: the request may or may not have been handled),
pagination, filters.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit
from xml.etree import ElementTree

from common.ec2 import HttpRequest
from common.ec2.inprocess import signed_request
from common.workload import ApiAnswer, ApiCall

USER_AGENT = "novalab-ec2-client/1"


class Ec2Error(Exception):
    """An EC2 error answer (or a transport failure: status 0)."""

    def __init__(self, code: str, message: str, status: int = 0, request_id: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def find_all(root, name: str):
    """Every element named ``name`` below ``root``, namespace ignored."""
    return [e for e in root.iter() if _local(e.tag) == name]


def find_text(root, name: str, default: str = "") -> str:
    for e in root.iter():
        if _local(e.tag) == name:
            return e.text or ""
    return default


class Ec2Client:
    """Signed EC2 requests to ``url`` (``http://HOST:PORT/services/Cloud``) as
    ``access_key`` (``<access>:<project>``). ``clock`` gives the request time in
    seconds since the epoch (default: the wall clock)."""

    def __init__(self, url: str, access_key: str, secret_key: str, *, region: str = "nova",
                 clock: Callable[[], float] = time.time, timeout: float = 60.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the EC2 URL must be http://HOST:PORT/PATH, not {url!r}")
        self.url = url
        self.netloc = parts.netloc
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.clock = clock
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._used = False
        #: Requests sent (answered with any status).
        self.requests = 0

    # -- signing --------------------------------------------------------------------

    def signed_request(self, action: str, params: Mapping[str, object] | None = None) -> HttpRequest:
        """The request to send, signed at the client's clock's time."""
        return signed_request(action, params, self.access_key, self.secret_key, self.clock(), self.netloc,
                              path=self.path, region=self.region)

    # -- one request ------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._used = False
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _exchange(self, action: str, params: Mapping[str, object] | None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            connection = self._connect()
            reused = self._used
            request = self.signed_request(action, params)
            try:
                connection.request(request.method, request.path, body=request.body,
                                   headers={**request.headers, "user-agent": USER_AGENT})
                answer = connection.getresponse()
                data = answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the idle connection: nothing was handled
                raise Ec2Error("ConnectionFailed", f"{self.url}: {e or type(e).__name__}") from None
            except TimeoutError:
                self.close()
                raise Ec2Error("RequestTimeout", f"{self.url}: no answer within {self.timeout:g} s") from None
            except OSError as e:
                self.close()
                raise Ec2Error("ConnectionFailed", f"{self.url}: {e}") from None
            self._used = True
            if answer.getheader("connection", "").lower() == "close":
                self.close()
            return answer.status, data
        raise AssertionError("unreachable")

    def call(self, action: str, params: Mapping[str, object] | None = None):
        """-> the XML root of the answer; Ec2Error for an error answer."""
        status, data = self._exchange(action, params)
        self.requests += 1
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError:
            raise Ec2Error("InvalidResponse", f"{action}: HTTP {status}, not XML: {data[:200]!r}", status) from None
        if status != 200 or _local(root.tag) == "Response":
            raise Ec2Error(find_text(root, "Code", "Unknown"), find_text(root, "Message"), status,
                           find_text(root, "RequestID") or find_text(root, "RequestId"))
        return root

    # -- the workload's actions -------------------------------------------------------

    def run_instances(self, image_id: str, instance_type: str, min_count: int = 1, max_count: int = 1) -> list[str]:
        root = self.call("RunInstances", {"ImageId": image_id, "InstanceType": instance_type,
                                          "MinCount": min_count, "MaxCount": max_count})
        return [find_text(item, "instanceId") for item in find_all(root, "instancesSet")[0]]

    def terminate_instances(self, instance_ids) -> None:
        self.call("TerminateInstances", {f"InstanceId.{i}": v for i, v in enumerate(instance_ids, 1)})

    def describe_instances(self, instance_ids=()) -> dict[str, str]:
        """-> {instance id: EC2 state name}."""
        root = self.call("DescribeInstances", {f"InstanceId.{i}": v for i, v in enumerate(instance_ids, 1)})
        out = {}
        for item in find_all(root, "item"):
            instance_id = next((c.text for c in item if _local(c.tag) == "instanceId"), None)
            state = next((c for c in item if _local(c.tag) == "instanceState"), None)
            if instance_id and state is not None:
                out[instance_id] = find_text(state, "name")
        return out

    def allocate_address(self) -> str:
        return find_text(self.call("AllocateAddress"), "publicIp")

    def associate_address(self, public_ip: str, instance_id: str) -> None:
        self.call("AssociateAddress", {"PublicIp": public_ip, "InstanceId": instance_id})

    def disassociate_address(self, public_ip: str) -> None:
        self.call("DisassociateAddress", {"PublicIp": public_ip})

    def release_address(self, public_ip: str) -> None:
        self.call("ReleaseAddress", {"PublicIp": public_ip})


class HttpApi:
    """The ``ApiCall`` performer of real mode (common.workload): each request is signed
    and sent by a client of the calling thread for the call's project (clients are
    not thread-safe). ``credentials`` maps a project to its user's (access, secret)."""

    def __init__(self, url: str, credentials: Mapping[str, tuple[str, str]], *,
                 clock: Callable[[], float] = time.time, timeout: float = 60.0):
        self.url = url
        self.credentials = credentials
        self.clock = clock
        self.timeout = timeout
        self._local = threading.local()
        self._clients: list[Ec2Client] = []
        self._lock = threading.Lock()
        #: Requests sent and not answered yet (being served, or waiting for a server thread).
        self.outstanding = 0

    def _client(self, project: str) -> Ec2Client:
        mine = getattr(self._local, "clients", None)
        if mine is None:
            mine = self._local.clients = {}
        if project not in mine:
            access, secret = self.credentials[project]
            mine[project] = Ec2Client(self.url, f"{access}:{project}", secret, clock=self.clock, timeout=self.timeout)
            with self._lock:
                self._clients.append(mine[project])
        return mine[project]

    def perform(self, agent, call: ApiCall) -> ApiAnswer:
        client = self._client(call.project)
        with self._lock:
            self.outstanding += 1
        try:
            status, body = client._exchange(call.action, dict(call.params))
        except Ec2Error as e:
            return ApiAnswer(0, b"", e.code)
        finally:
            with self._lock:
                self.outstanding -= 1
        client.requests += 1
        return ApiAnswer(status, body)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
