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
            context = RequestContext(user_id=f"{project}-user", project_id=project, request_id=f"req-{index}")
            self.pending.append(env.process(self._launch(context, itype, lifetime)))
            self.issued += 1
        yield env.all_of(self.pending)

    def _launch(self, context, itype, lifetime):
        n = self.spec.instances_per_request
        try:
            reservation = yield from self.api.request(
                self.api.cloud.run_instances(context, self.image, itype, n, n)
            )
        except NovaError:
            self.finished += 1
            return  # rejected: the recorder has the reason
        if lifetime is not None:
            yield self.runtime.env.timeout(lifetime)
            try:
                yield from self.api.request(self.api.cloud.terminate_instances(context, reservation["instances"]))
            except NovaError:
                pass
        self.finished += 1
