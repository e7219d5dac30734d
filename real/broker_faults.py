"""Broker faults of a real run: played on a RabbitMQ node the run starts for itself.

A scenario whose fault plan has a ``broker_outage`` runs against a private node
(``real.private_rabbit``) instead of ``real.amqp_url``: the run starts it before
anything else, every process of the run uses it (its vhost ``/`` is the run's own), and
the run stops it at the end. The outage is ``kill -9`` of the node at ``at`` and a
restart ``broker_outage`` seconds later (scenario seconds, divided by the time scale);
the broker is really away for that long plus the node's start-up (seconds of wall
time), during which the daemons retry with their backoff and publishes fail.

A broker fault with an ``amqp_url`` of the user's own is refused (exit 2): a run kills
only what it started.
"""

from __future__ import annotations

import time

from common.scenario import Real
from real import transport
from real.private_rabbit import PrivateRabbit, RabbitError
from real.startup import StartupError
from real.transport.wire import redact

DEFAULT_AMQP_URL = Real.model_fields["amqp_url"].default


def wanted(scenario) -> bool:
    """Does the fault plan need a broker of the run's own?"""
    return any(fault.broker_outage is not None for fault in scenario.faults)


def refusals(scenario) -> list[str]:
    """Why the plan cannot run as given (nothing when it can)."""
    if wanted(scenario) and scenario.real.amqp_url != DEFAULT_AMQP_URL:
        return [f"a broker_outage is played on a RabbitMQ node the run starts for itself, but real.amqp_url names "
                f"a broker of yours ({redact(scenario.real.amqp_url)}), which a run never kills: remove "
                "real.amqp_url from the scenario, or the broker_outage fault"]
    return []


def start_for(run) -> None:
    """Start the run's own node under ``<run>/rabbitmq`` when its plan has a broker fault
    (or ``run.own_broker`` is True: a test plays one itself) and point the run's
    configuration at it; ``run.own_broker`` is then the node. Raises StartupError."""
    if not (run.own_broker or wanted(run.scenario)):
        run.own_broker = None
        return
    try:
        run.own_broker = PrivateRabbit(run.out / "rabbitmq").start()
    except RabbitError as e:
        raise StartupError(f"cannot start a RabbitMQ node for the broker faults: {e}") from None
    run.config = run.config.model_copy(update={"amqp_url": run.own_broker.url})


def connect_for(run, connect):
    """``start_for``, then ``connect(run.config)`` (Redis and the broker answer); the node
    is stopped again when that raises."""
    start_for(run)
    try:
        return connect(run.config)
    except BaseException:
        stop_for(run)
        raise


def stop_for(run) -> bool:
    """Stop the run's own node, if it has one (its data and queues go, its logs stay);
    -> whether it had one."""
    if not isinstance(run.own_broker, PrivateRabbit):
        return False
    run.own_broker.stop()
    return True


def steps(fault, scale: float) -> list[tuple[float, object]]:
    """The outage as (wall seconds after the workload starts, callable(run)) pairs."""
    return [(fault.at / scale, lambda run: kill(run, fault.broker_outage)),
            ((fault.at + fault.broker_outage) / scale, restart)]


def _note(run, what: str) -> None:
    run.fault_log.append((round(run.runtime.now() - run.workload_origin, 3), what))


def kill(run, seconds: float) -> int | None:
    """``kill -9`` of the run's node, logged with what its queues held; -> that count."""
    rabbit = run.own_broker
    try:
        count = sum(d or 0 for d in transport.queue_depths(rabbit.url, run._queue_names()).values())
        queued = f"{count} messages queued"
    except Exception as e:  # the count is for the log only
        count, queued = None, f"queue depths unknown: {e}"
    rabbit.kill()
    _note(run, f"broker killed for {seconds:g} s (kill -9 of {rabbit.node}; {queued})")
    return count


def restart(run) -> None:
    """Start the run's node again (same ports and data), logged once it answers."""
    began = time.monotonic()
    try:
        run.own_broker.restart()
    except RabbitError as e:
        _note(run, f"broker restart failed: {e}")
        return
    _note(run, f"broker restarted (answering after {time.monotonic() - began:.1f} s of start-up)")
