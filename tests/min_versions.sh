#!/usr/bin/env bash
# The determinism tests at the lowest versions pyproject.toml allows for the packages a
# simulation imports (tests/min_versions.py lists them), in a throwaway venv; then the
# same tests with the installed (newest) versions. Needs PyPI; takes a few minutes.
#   bash tests/min_versions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pins=$(python3 tests/min_versions.py)
echo "min_versions: installing $pins"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check $pins pytest
"$work/venv/bin/pip" list --format=freeze | grep -iE "^($(echo "$pins" | sed 's/==[^ ]*//g; s/ /|/g'))==" || true
tests=(tests/sim/test_runs.py -k "fingerprint")
echo "min_versions: determinism at the lowest versions"
PYTHONPATH=$PWD "$work/venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
echo "min_versions: determinism at the installed versions"
PYTHONPATH=$PWD python3 -m pytest -q -p no:cacheprovider "${tests[@]}"
