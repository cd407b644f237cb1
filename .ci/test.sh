#!/usr/bin/env bash
# The README's test command: create a virtual environment, install the package with its
# test extra, run the whole test suite. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -v --durations=15 "$@"
