#!/usr/bin/env bash
# The import layers (setup.cfg [importlinter]) checked on the package as it is installed:
# adapters/ ships as reskontro.adapters (setup.cfg package_dir), which import-linter cannot
# see in the source tree, so the check runs on a copy laid out as the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r reskontro "$tmp/reskontro"
cp -r adapters "$tmp/reskontro/adapters"
cp setup.cfg "$tmp/setup.cfg"
cd "$tmp"
PYTHONPATH="$tmp" "${LINT_IMPORTS:-lint-imports}" --no-cache "$@" setup.cfg
