#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks (Debian packages for libvirt,
# linux_net and the services; the Python package with its extras), starts Redis and
# RabbitMQ if they are not running, lints and type-checks the whole tree (ruff, mypy;
# either one failing stops the run), then runs the whole suite. Extra arguments go to
# pytest (e.g. `bash tests/run.sh -k allocator`). Needs root: apt-get, namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in real/setup/*.sh; do
    bash "$setup"
done
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,real]'

# Lint and types first: a finding fails the run before the (minutes-long) suite starts.
if ! python3 -m ruff check .; then
    echo "tests/run.sh: ruff found problems (above); fix them or run 'ruff check --fix .'" >&2
    exit 1
fi
if ! python3 -m mypy; then  # incremental: its cache (.mypy_cache) keeps reruns fast
    echo "tests/run.sh: mypy found type errors (above)" >&2
    exit 1
fi

exec python3 -m pytest "$@"
