"""The sim enters at the API: its workload goes through the EC2 request handler."""

import json
import subprocess
import sys
from pathlib import Path

from common.scenario import with_overrides
from sim.run import simulate
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]

COVERAGE_RUN = """
import coverage
cov = coverage.Coverage(data_file=None, include=[{ec2!r}, {signing!r}])
cov.start()
from sim.run import simulate
from sim.scenario_file import load
simulate(load({scenario!r})[0])
cov.stop()
statements = executed = 0
for path in cov.get_data().measured_files():
    _, lines, _, missing, _ = cov.analysis2(path)
    statements += len(lines)
    executed += len(lines) - len(missing)
print(executed / statements)
"""


def five_hosts(**overrides):
    scenario, _ = load(ROOT / "scenarios" / "5-hosts.yaml")
    return with_overrides(scenario, overrides) if overrides else scenario


def test_a_sim_run_executes_the_ec2_modules():
    """At least 40% of the EC2 API's statements run in a sim of 5-hosts (0% before the sim entered at the API)."""
    script = COVERAGE_RUN.format(ec2=str(ROOT / "common" / "ec2*"), signing=str(ROOT / "common" / "signing.py"),
                                 scenario=str(ROOT / "scenarios" / "5-hosts.yaml"))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(done.stdout.strip().splitlines()[-1]) >= 0.40


def test_every_launch_is_a_request_the_api_answered():
    """RunInstances answered == instances launched, and every launch was terminated through the API."""
    result = simulate(five_hosts())
    api = result.summary["api"]
    assert api["by_action"]["RunInstances"]["count"] == result.summary["instances"]["launched"] > 0
    assert api["by_action"]["TerminateInstances"]["count"] == result.summary["instances"]["deleted"]


def test_a_refused_request_is_counted_by_action_and_code():
    """A project over its instance quota gets InstanceLimitExceeded from the API, counted in the summary."""
    scenario = five_hosts(**{"cloud.projects": [{"id": "demo", "quota": {"instances": 2, "cores": 100}}],
                             "workload.projects": None, "workload.lifetime": None})
    errors = simulate(scenario).summary["api"]["errors"]
    assert any(key.startswith("RunInstances ") and n > 0 for key, n in errors.items()), json.dumps(errors)
