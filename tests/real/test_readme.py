"""README.md's "Use it like a cloud" section, run as written.

The section's ``sh`` blocks are joined in order into one bash script (``set -euo
pipefail``) and run from the repository. Only the environment differs from a reader's
shell: ``NOVALAB_DIR`` puts the deployment in a temporary directory (the README's
``${NOVALAB_DIR:-/tmp/novalab}``), ``NOVALAB_API_PORT`` and ``NOVALAB_OBJECTSTORE_PORT``
take free ports (8773 and 3333 may be taken on a test machine), and
``NOVALAB_REDIS_URL``/``NOVALAB_AMQP_URL`` name the services the tests use. A finalizer
always runs ``novalab deploy down``. If the README and the code drift apart, this fails.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Use it like a cloud"
SCRIPT_TIMEOUT = 240


def section_blocks(text: str, heading: str = SECTION) -> list[str]:
    """The ``sh`` code blocks of the section under ``heading`` (up to the next ``## ``)."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    body = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", body, flags=re.S | re.M)


def test_the_section_has_the_promised_commands():
    blocks = section_blocks((ROOT / "README.md").read_text())
    script = "\n".join(blocks)
    for needed in ("novalab deploy up", "user create alice", "project create demo alice", "role add alice",
                   "credentials alice demo >", "set -a;", "run_instances", "instance_running", "allocate_address",
                   "associate_address", "terminate_instances", "put_object", "register-image", "deregister-image",
                   "novalab deploy down"):
        assert needed in script, needed


@pytest.fixture
def readme_env(redis_url, amqp_url, tmp_path):
    for module in ("boto3", "libvirt"):
        try:
            __import__(module)
        except ImportError as e:
            service_unavailable(f"the README's Python package {module}", str(e))
    if shutil.which("novalab") is None:
        service_unavailable("the novalab command", "not on PATH (python3 -m pip install -e .)")
    from real.slapd import SlapdMissing, _find, free_port

    try:
        _find("slapd")
    except SlapdMissing as e:
        service_unavailable("slapd", str(e))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALAB_", "AWS_", "EC2_"))}
    directory = tmp_path / "cloud"
    api_port = free_port()
    s3_port = free_port()
    while s3_port == api_port:
        s3_port = free_port()
    env.update({
        "NOVALAB_DIR": str(directory),
        "NOVALAB_API_PORT": str(api_port),
        "NOVALAB_OBJECTSTORE_PORT": str(s3_port),
        "NOVALAB_REDIS_URL": redis_url,
        "NOVALAB_AMQP_URL": amqp_url,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),  # the reader's ~/.aws must not matter
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    })
    yield env, directory
    down = subprocess.run(["novalab", "deploy", "down", "--dir", str(directory)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr


def test_readme_cloud_section_runs_as_written(readme_env):
    env, directory = readme_env
    blocks = section_blocks((ROOT / "README.md").read_text())
    script = "set -euo pipefail\n" + "\n".join(blocks)
    done = subprocess.run(["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert re.search(r"^i-\w+ running m1\.tiny 10\.0\.0\.\d+$", done.stdout, re.M), done.stdout
    assert re.search(r"^203\.0\.113\.\d+ -> i-\w+$", done.stdout, re.M), done.stdout
    assert re.search(r"^i-\w+ terminated$", done.stdout, re.M), done.stdout
    assert "hello from alice" in done.stdout
    if shutil.which("aws"):
        assert "alice disk" in done.stdout  # describe-images showed the image the CLI registered
    assert "novalab deploy: up in" in done.stdout and "novalab deploy: down in" in done.stdout
    # down left only the logs (and the credentials file the reader wrote)
    assert sorted(p.name for p in directory.iterdir()) == ["alice.env", "logs"]
