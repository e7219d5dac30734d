"""The shared workload: the requests both modes send, step by step, with no runner."""

import random
from pathlib import Path

from scripted import step

from common.effects import Now, Sleep
from common.scenario import with_overrides
from common.workload import ApiAnswer, ApiCall, Fork, Join, Workload, instance_ids, outcome, public_ip
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
NS = 'xmlns="http://ec2.amazonaws.com/doc/2010-08-31/"'


def run_answer(*ids):
    items = "".join(f"<item><instanceId>{i}</instanceId></item>" for i in ids)
    return ApiAnswer(200, f"<RunInstancesResponse {NS}><instancesSet>{items}</instancesSet></RunInstancesResponse>".encode())


def error_answer(code):
    body = f"<Response><Errors><Error><Code>{code}</Code><Message>no</Message></Error></Errors></Response>"
    return ApiAnswer(400, body.encode())


def workload(**overrides):
    scenario, _ = load(ROOT / "scenarios" / "5-hosts.yaml")
    return Workload(with_overrides(scenario, overrides), random.Random("test/workload"))


def test_answers_are_read_as_a_client_reads_them():
    """Instance ids, the public address and the error code come out of the XML answer."""
    assert instance_ids(run_answer("i-a", "i-b")) == ["i-a", "i-b"]
    assert public_ip(ApiAnswer(200, b"<AllocateAddressResponse><publicIp>4.4.4.4</publicIp></AllocateAddressResponse>")) == "4.4.4.4"
    assert outcome(error_answer("InstanceLimitExceeded")) == "InstanceLimitExceeded"
    assert outcome(ApiAnswer(0, b"", "RequestTimeout")) == "RequestTimeout"
    assert outcome(ApiAnswer(200, b"not xml")) == "InvalidResponse"


def test_run_sleeps_forks_each_launch_then_joins_them_all():
    """Arrivals are Sleep then Fork, one per request; the last effect joins every launch."""
    w = workload(**{"workload.requests": 3, "workload.arrivals.process": "constant", "workload.arrivals.rate": 2})
    gen = w.run()
    seen = [step(gen)]
    for handle in (None, "t1", None, "t2", None):
        seen.append(step(gen, handle))
    assert [type(e) for e in seen] == [Sleep, Fork, Sleep, Fork, Sleep, Fork]
    assert seen[0] == Sleep(0.5)
    join = step(gen, "t3")
    assert isinstance(join, Join) and join.handles == ("t1", "t2", "t3") and w.issued == 3


def test_a_launch_runs_then_terminates_after_its_lifetime():
    """RunInstances, sleep out the lifetime, TerminateInstances of the ids the answer named."""
    w = workload(**{"workload.lifetime": 30, "workload.floating_ips": 0})
    _, launch = w.draw(0)
    gen = w._launch(launch)
    assert step(gen) == Now()
    assert step(gen, 10.0) == Now()
    call = step(gen, 10.0)
    assert isinstance(call, ApiCall) and call.action == "RunInstances"
    assert step(gen, run_answer("i-1")) == Now()
    assert step(gen, 10.5) == Now()
    assert step(gen, 10.5) == Sleep(29.5)
    assert step(gen) == Now()
    terminate = step(gen, 40.0)
    assert terminate.action == "TerminateInstances" and terminate.params == (("InstanceId.1", "i-1"),)
    assert w.answers[("RunInstances", "")] == 1


def test_a_refused_launch_is_counted_by_its_code_and_sends_nothing_more():
    """An error answer ends the launch: no terminate follows, the refusal is counted."""
    w = workload()
    _, launch = w.draw(0)
    gen = w._launch(launch)
    step(gen)
    step(gen, 0.0)
    step(gen, 0.0)
    assert step(gen, error_answer("InstanceLimitExceeded")) == Now()
    try:
        step(gen, 1.0)
    except StopIteration:
        pass
    assert w.answers == {("RunInstances", "InstanceLimitExceeded"): 1} and w.finished == 1
    assert w.api_summary()["errors"] == {"RunInstances InstanceLimitExceeded": 1}


def test_the_same_seed_draws_the_same_requests():
    """Draws depend on the stream alone, so both modes issue the same requests for a seed."""
    first, second = workload(), workload()
    assert [first.draw(i) for i in range(20)] == [second.draw(i) for i in range(20)]
