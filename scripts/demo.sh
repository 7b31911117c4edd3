#!/usr/bin/env bash
# Set up everything (registries only) and run the demo: GOT-D, kNN, DSIR and random on Debian's
# fortunes collection (installed here from the distribution's packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/games/fortunes/science ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fortunes >/dev/null
fi
bash scripts/setup.sh
exec .venv/bin/tunesift demo "$@"
