"""The sim's API service: ``ApiCall`` performed in-process against ``Ec2Api.handle``.

The workload (common.workload) yields an ``ApiCall``; this performer turns it into the
``HttpRequest`` a client would have sent and drives the same request handler that the
real API server drives (parsing, signature, directory look-up, RBAC, quotas, the
CloudController workflow, XML). Its answer is the XML document a client reads.

*Features*

- A bounded number of requests at once (``cloud.api_workers``; the server's worker
  threads), the others wait their turn in arrival order: the API's admission queue.
- ``timing.api`` is drawn once per request before it is handled: the HTTP transfer and
  the server's own overhead, which in-process handling does not pay.
- Signed requests (``workload.sign_requests: true``): Signature Version 4 made with the
  project user's secret and the virtual clock, verified by the handler, so the sim pays
  the signing work a real client and server pay. Unsigned: a trusted in-process request
  that names the access key; the handler skips the timestamp and signature checks but
  still authenticates the key in the directory and authorizes the action.
- The handler runs as the ``api`` agent, so its effects are scheduling points like any
  service's, and it can later be killed by the fault plan.

*Not modelled*: HTTP itself (connections, keep-alive, bodies over the size bound),
client retries, and the server's thread pool beyond its size.
"""

from __future__ import annotations

import simpy

from common.ec2.inprocess import signed_request, trusted_request
from common.effects import ApiEffect
from common.workload import ApiAnswer, ApiCall

#: The Host the sim's requests are signed for (any name does; it is signed and checked).
HOST = "api.sim:8773"


class SimApi:
    def __init__(self, runtime, ec2, credentials, *, workers: int, latency, rng, signed: bool):
        """``credentials`` maps a project to its workload user's (access key, secret key)."""
        self.runtime = runtime
        self.ec2 = ec2
        self.credentials = credentials
        self.slots = simpy.Resource(runtime.env, capacity=workers)
        self.latency = latency
        self.rng = rng
        self.signed = signed
        self.agent = runtime.agent("api")
        self.requests = 0
        #: The most requests ever waiting for a worker (exact; the series is sampled).
        self.peak_queued = 0

    @property
    def queued(self) -> int:
        """Requests waiting for a worker: the admission queue's depth."""
        return len(self.slots.queue)

    def perform(self, agent, call: ApiCall):
        """The ``ApiCall`` performer (a SimPy generator); -> ApiAnswer."""
        env = self.runtime.env
        with self.slots.request() as slot:
            self.peak_queued = max(self.peak_queued, self.queued)
            yield slot
            delay = self.latency.sample(self.rng)
            if delay > 0:
                yield env.timeout(delay)
            self.requests += 1
            access, secret = self.credentials[call.project]
            access_key, request_id, params = f"{access}:{call.project}", f"req-{self.requests}", dict(call.params)
            if self.signed:
                request = signed_request(call.action, params, access_key, secret, float(env.now), HOST,
                                         request_id=request_id)
            else:
                request = trusted_request(call.action, params, access_key, request_id=request_id)
            response = yield from self.runtime.drive(self.agent, self.ec2.handle(request))
        return ApiAnswer(response.status, response.body)


def install(runtime, api: SimApi) -> SimApi:
    runtime.register(ApiEffect, api)
    return api
