#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, starts the services the
# real-mode tests need, then runs the whole suite. Extra arguments go to pytest
# (e.g. `bash tests/run.sh -k allocator`). Needs root for apt-get and namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
for setup in real/setup/*.sh; do
    bash "$setup"
done

exec python3 -m pytest "$@"
