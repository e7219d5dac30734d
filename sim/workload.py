"""The workload generator: RunInstances requests arriving over time, each instance
terminated after its drawn lifetime.

Arrivals are ``constant`` (every 1/rate s) or ``poisson`` (exponential gaps, mean
1/rate). Instance type and project are drawn by weight. All draws come from the
workload's own stream, so they do not depend on what the cloud does.
"""

from __future__ import annotations

from common.context import RequestContext
from common.errors import NovaError


class Workload:
    def __init__(self, runtime, api, scenario, rng):
        self.runtime = runtime
        self.api = api
        self.spec = scenario.workload
        self.rng = rng
        self.image = self.spec.image or scenario.cloud.images[0]
        self.types = sorted(self.spec.instance_types.items())
        projects = self.spec.projects or {p.id: 1.0 for p in scenario.cloud.projects}
        self.projects = sorted(projects.items())
        self.issued = 0
        self.finished = 0
        self.pending = []

    def _pick(self, weighted):
        names = [name for name, _ in weighted]
        return self.rng.choices(names, weights=[w for _, w in weighted])[0]

    def arrivals(self):
        """SimPy process: issue every request, then wait for all of them to finish."""
        env, spec = self.runtime.env, self.spec
        for index in range(spec.requests):
            gap = 1.0 / spec.arrivals.rate
            if spec.arrivals.process == "poisson":
                gap = self.rng.expovariate(spec.arrivals.rate)
            yield env.timeout(gap)
            project = self._pick(self.projects)
            itype = self._pick(self.types)
            lifetime = spec.lifetime.sample(self.rng) if spec.lifetime is not None else None
            floating_after = None
            if spec.floating_ips and self.rng.random() < spec.floating_ips:
                floating_after = spec.floating_delay.sample(self.rng)
            context = RequestContext(user_id=f"{project}-user", project_id=project, request_id=f"req-{index}")
            self.pending.append(env.process(self._launch(context, itype, lifetime, floating_after)))
            self.issued += 1
        yield env.all_of(self.pending)

    def _launch(self, context, itype, lifetime, floating_after):
        env, cloud, n = self.runtime.env, self.api.cloud, self.spec.instances_per_request
        started = env.now
        try:
            reservation = yield from self.api.request(cloud.run_instances(context, self.image, itype, n, n))
        except NovaError:
            self.finished += 1
            return  # rejected: the recorder has the reason
        address = None
        if floating_after is not None and (lifetime is None or floating_after < lifetime):
            yield env.timeout(floating_after)
            address = yield from self._floating(context, reservation["instances"][0])
        if lifetime is not None:
            yield env.timeout(max(0.0, started + lifetime - env.now))
            if address is not None:
                yield from self._call(cloud.disassociate_address(context, address))
                yield from self._call(cloud.release_address(context, address))
            yield from self._call(cloud.terminate_instances(context, reservation["instances"]))
        self.finished += 1

    def _floating(self, context, instance_id):
        """Allocate and associate a floating address; -> the address held, or None."""
        try:
            address = yield from self.api.request(self.api.cloud.allocate_address(context))
        except NovaError:
            return None
        try:
            yield from self.api.request(self.api.cloud.associate_address(context, address, instance_id))
        except NovaError:
            yield from self._call(self.api.cloud.release_address(context, address))
            return None
        return address

    def _call(self, work):
        try:
            return (yield from self.api.request(work))
        except NovaError:
            return None
