#!/usr/bin/env bash
# Runs every test of Sightline on a fresh machine: installs what the tests need (the official
# OpenTelemetry Python SDK and exporters from PyPI), checks formatting and lints, then runs the
# unit and end-to-end tests of the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/python/requirements.txt
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
