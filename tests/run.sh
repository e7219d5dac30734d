#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, then runs the whole suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k allocator`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'

exec python3 -m pytest "$@"
