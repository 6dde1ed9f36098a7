#!/usr/bin/env bash
# Runs every check and test of the project, installing what they need first.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's time, and the total, printed as it ends (CI's budget is
# 20 minutes from a cold clone, 10 warm).
started=$SECONDS
stage_name=""
stage_start=$SECONDS
stage() {
  if [ -n "$stage_name" ]; then
    printf '== %s took %dm%02ds\n' "$stage_name" $(((SECONDS - stage_start) / 60)) $(((SECONDS - stage_start) % 60))
  fi
  stage_name=$1
  stage_start=$SECONDS
  [ -n "$stage_name" ] && echo "== $stage_name"
  return 0
}

stage "installing what the tests need"
scripts/install-test-deps.sh
# shellcheck source=scripts/postgres-for-tests.sh
. scripts/postgres-for-tests.sh

stage "format and lints"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
# The fuzz crate has its own lock file: a dependency added to a crate it
# uses must be added there too (fails here, early, rather than after the tests).
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null
cargo clippy --workspace --all-targets --locked -- -D warnings
# No module of a crate imports one that imports it back (#29).
python3 scripts/import-circles.py

stage "unit, provider, store (SQLite and PostgreSQL), CLI and end-to-end tests (Prosody on loopback)"
# A test that hangs must fail CI in good time, not use up its 90 minutes:
# the tests and their build take about 6 minutes on a cold 2-core machine.
# cargo's harness names a test running past 60 s ("has been running for
# over 60 seconds") above this message.
timeout -k 30 35m cargo test --workspace --locked || {
  status=$?
  if [ "$status" -eq 124 ]; then
    echo "the tests did not finish within 35 minutes: a test hangs (see 'has been running for over 60 seconds' above)" >&2
  fi
  exit "$status"
}

stage "fuzzing every parser of outside input, 20 s a target (scripts/fuzz.sh SECONDS to run longer)"
scripts/fuzz.sh 20

stage "a build without any carrier still runs with the sandbox"
cargo build -p sms-over-xmpp-bin --no-default-features --locked
bin=target/debug/sms-over-xmpp
"$bin" check --config examples/sandbox.toml
if "$bin" check --config examples/twilio.toml 2>/tmp/sox-nofeatures.err; then
  echo "a build without the twilio feature accepted a twilio account" >&2
  exit 1
fi
grep -q 'unknown provider type' /tmp/sox-nofeatures.err
# Put the full build back for whoever runs the binary next.
cargo build -p sms-over-xmpp-bin --locked

stage "the embedding example, the Gateway alone"
cargo run -q -p sms-over-xmpp-examples --example embed --locked -- examples/embed.toml --gateway-alone | tee /tmp/sox-embed.out
grep -q "sent 1 part(s) through echo" /tmp/sox-embed.out

stage "the load benchmark, as a smoke test (a few hundred round trips, nothing lost)"
cargo build -p sms-bench --locked
target/debug/sms-bench run --smoke --gateway target/debug/sms-over-xmpp

stage "the quick start, as a smoke test: alone, twice (state kept), and while another runs"
qs=$(mktemp -d)
QS_DIR="$qs" scripts/quickstart.sh --fresh --smoke
QS_DIR="$qs" scripts/quickstart.sh --smoke
test -e "$qs/data/localhost/accounts/alice.dat"
# One running; a second must leave it untouched.
QS_DIR="$qs" scripts/quickstart.sh >"$qs/first.log" 2>&1 &
first=$!
for _ in $(seq 300); do
  curl -fsS http://127.0.0.1:9677/hooks/ >/dev/null 2>&1 && break
  sleep 0.2
done
if QS_DIR="$qs" scripts/quickstart.sh --fresh --smoke 2>"$qs/second.err"; then
  echo "a second quick start ran while the first did" >&2
  exit 1
fi
grep -q "Nothing was changed" "$qs/second.err"
test -e "$qs/sms-over-xmpp.db"
curl -fsS http://127.0.0.1:9677/hooks/ | grep -q sms-over-xmpp
kill "$first"
wait "$first" || true
rm -rf "$qs"

stage "the Debian package: built with cargo-deb, its unit verified; under CI also installed with dpkg -i"
if [ "${CI:-}" = "true" ]; then
  scripts/package.sh --install
else
  scripts/package.sh
fi

stage ""
printf '== all checks passed in %dm%02ds\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60))
