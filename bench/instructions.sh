#!/usr/bin/env bash
# Instructions per round trip of two gateway builds, counted by callgrind:
# repeatable to a tenth of a percent whatever else the machine does, where
# CPU time moves by 2x from day to day (#30). A figure beside `sms-bench run
# --baseline`, not instead of it: callgrind counts the gateway's own
# instructions, not the kernel's work for its system calls.
#
#   bench/instructions.sh OLD_BINARY NEW_BINARY
#
# Each build runs under `valgrind --tool=callgrind` through `sms-bench run`
# (a binary may be a script that execs the gateway: what it execs is counted)
# twice, at SMALL and LARGE round trips; the difference divided by the
# difference in round trips is the cost of a round trip without the start.
# Needs valgrind, a release `sms-bench` beside the binaries (built with
# `cargo build --release -p sms-over-xmpp-bin && cargo build --release -p
# sms-bench`, see docs/benchmarks.md) and whatever
# `sms-bench run` needs (Prosody). About 5 minutes a build.
# Under valgrind SHA-1 runs without the CPU's SHA instructions, so the
# Twilio signature counts for more than it costs natively.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 OLD_BINARY NEW_BINARY" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SMS_BENCH:-$here/target/release/sms-bench}
small=${SMALL:-3000}
large=${LARGE:-15000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # binary round-trips -> "instructions round-trips"
  local bin=$1 n=$2 wrap=$work/wrap
  cat >"$wrap" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$work/cg.out "$bin" "\$@"
EOF
  chmod +x "$wrap"
  "$bench" run --gateway "$wrap" --messages "$n" --runs 1 --warmup 100 --unloaded 10 \
    >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  if ! grep -q "lost: echo 0 gateway 0" "$work/log"; then
    grep -E "lost|errors" "$work/log" >&2
  fi
  local ir trips
  ir=$(grep -oE "Collected : [0-9]+" "$work/log" | tail -1 | grep -oE "[0-9]+$")
  trips=$(grep -oE "after [0-9]+ round trips" "$work/log" | tail -1 | grep -oE "[0-9]+")
  echo "$ir $trips"
}

per_trip() { # binary -> instructions per round trip
  local a b
  read -r ia ta < <(count "$1" "$small")
  read -r ib tb < <(count "$1" "$large")
  echo $(((ib - ia) / (tb - ta)))
}

old=$(per_trip "$1")
new=$(per_trip "$2")
echo "instructions per round trip: old $old, new $new, new/old $(awk "BEGIN{printf \"%.3f\", $new/$old}")"
