#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Tests that need ../shared/data or real models skip
# cleanly when those are absent; pass `-m "not slow"` to run only the fast ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
