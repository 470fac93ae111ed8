#!/usr/bin/env bash
# Runs every test of Sightline on a fresh machine: installs what the tests need (the official
# OpenTelemetry Python SDK and exporters from PyPI, Debian's prometheus and victoria-metrics
# (vmagent), Debian's chromium and chromium-driver, playwright-core from npm; the tests fetch
# the SOFALookout client, SOFATracer and the Zipkin server from Maven Central, Prometheus's
# remote-write compliance tests and PromQL test files from the Go module proxy, and build
# Prometheus 3 with `go install` themselves), checks formatting and lints, then runs the unit and end-to-end tests of the whole
# workspace and prints one total.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages; policy-rc.d keeps any service they bring stopped.
apt_install() {
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" > /dev/null ||
    { apt-get update > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" > /dev/null; }
  rm -f /usr/sbin/policy-rc.d
}

# A cold build needs about 4 GB under target/; say so up front rather than as a linker error.
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kb / 1024)) MB free here; a cold build needs about 4 GB" >&2
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/python/requirements.txt
# prometheus scrapes the instrumentation example and remote-writes to Sightline, as vmagent does;
# chromium runs the UI's browser tests.
command -v prometheus > /dev/null || apt_install prometheus
command -v vmagent > /dev/null || apt_install victoria-metrics
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || apt_install chromium chromium-driver fonts-liberation
npm ci --prefix ui/tests --no-audit --no-fund --loglevel=error
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary; the last is often an empty doc-test run, so
# close with the total.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
