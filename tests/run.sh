#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks (Debian packages for libvirt,
# linux_net and the services; the Python package with its extras), starts Redis and
# RabbitMQ if they are not running, then runs the whole suite. Extra arguments go to
# pytest (e.g. `bash tests/run.sh -k allocator`). Needs root: apt-get, namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in real/setup/*.sh; do
    bash "$setup"
done
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,real]'

exec python3 -m pytest "$@"
