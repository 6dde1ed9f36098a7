#!/usr/bin/env bash
# Writes the gateway's link order (#30): the functions a benchmark run
# executes, hottest first, for the linker to lay out together.
#
#   bench/link-order.sh [BINARY]           # default target/release/sms-over-xmpp
#   bench/link-order.sh --check [BINARY]   # how many of the file's names it has
#
# The binary runs under `valgrind --tool=callgrind` through `sms-bench run`
# (start, warm-up, 15,000 round trips, enough that the store moves old
# repeat keys to disk, stop); every function of the binary it executes is
# listed by its symbol, by instructions spent in it, most first, then
# those only a run outside valgrind executes (sampled with perf: code for
# CPU instructions valgrind lacks), in
# crates/sms-over-xmpp-bin/link/functions.order, which
# crates/sms-over-xmpp-bin/build.rs hands to the linker
# (`--symbol-ordering-file`). Without it the linker scatters the 3 MB of
# code a gateway runs over 9 MB of pages; in order it is 3 MB, and a
# page the gateway runs holds mostly code it runs (docs/performance.md).
#
# Symbols carry a hash of their crate's version and features, so a new
# dependency version or feature set leaves some names stale: the linker
# skips names it does not find, and their functions go where they would
# have gone anyway. Run this again after such a change (it takes a minute
# or two; needs valgrind, python3, Prosody and a release `sms-bench`,
# `cargo build --release -p sms-over-xmpp-bin && cargo build --release -p
# sms-bench`: two commands, because built together the benchmark's
# dependencies turn on features of the gateway's, which changes the hashes
# in the gateway's symbols, and a file made from that binary would not
# match a gateway built alone, as CI, the package and `cargo install` build it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=$here/crates/sms-over-xmpp-bin/link/functions.order
if [ "${1:-}" = "--check" ]; then
  bin=${2:-$here/target/release/sms-over-xmpp}
  have=$(comm -12 <(grep -v '^#' "$out" | sort -u) \
    <(nm --defined-only "$bin" | awk '{print $3}' | sort -u) | wc -l)
  echo "$bin has $have of the $(grep -vc '^#' "$out") functions in $out"
  exit 0
fi
bin=$(realpath "${1:-$here/target/release/sms-over-xmpp}")
bench=${SMS_BENCH:-$here/target/release/sms-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/wrap" <<WRAP
#!/usr/bin/env bash
exec valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/cg.out "$bin" "\$@"
WRAP
chmod +x "$work/wrap"
"$bench" run --gateway "$work/wrap" --messages 15000 --runs 1 --warmup 100 --unloaded 10 \
  >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
grep -q "lost: echo 0 gateway 0" "$work/log" || { grep -E "lost|errors" "$work/log" >&2; exit 1; }

# What valgrind's CPU cannot run (SHA-1 on the CPU's SHA instructions, say)
# is sampled from a run outside it, with perf, if there is perf.
: >"$work/native"
if command -v perf >/dev/null; then
  "$bench" run --gateway "$bin" --messages 20000 --runs 1 --unloaded 10 >"$work/native.log" 2>&1 &
  run=$!
  pid=""
  for _ in $(seq 100); do
    pid=$(pgrep -n -f "^$bin run --config" || true)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  if [ -n "$pid" ]; then
    perf record -q -F 2000 -p "$pid" -o "$work/perf.data" >/dev/null 2>&1 || true
    perf report -q -i "$work/perf.data" --no-children --sort sym -g none --no-demangle \
      2>/dev/null | awk '$2 == "[.]" {print $3}' >"$work/native" || true
  fi
  wait "$run" || true
else
  echo "no perf: functions only the CPU itself runs are left out" >&2
fi

python3 - "$work/cg.out" "$bin" "$out" "$work/native" <<'PY'
import collections, re, subprocess, sys

profile, binary, out, native = sys.argv[1:]
# callgrind's format: names are given once as "(n) name", then as "(n)";
# a cost line after "calls=" is the call's inclusive cost, not the
# caller's own.
names = {"ob": {}, "fn": {}}
def name(kind, s):
    m = re.match(r"\((\d+)\)(?: (.*))?$", s)
    if not m:
        return s
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), "")

cost = collections.Counter()
ob = fn = None
skip = False
for line in open(profile, errors="replace"):
    line = line.rstrip("\n")
    if skip:
        skip = False
    elif line.startswith("ob="):
        ob = name("ob", line[3:])
    elif line.startswith("fn="):
        fn = (ob, name("fn", line[3:]))
    elif line.startswith("cob="):
        name("ob", line[4:])
    elif line.startswith("cfn="):
        name("fn", line[4:])
    elif line.startswith("calls="):
        skip = True
    elif fn and line[:1] and line[:1] in "0123456789+-*":
        parts = line.split()
        if len(parts) >= 2:
            cost[fn] += int(parts[1])

# The binary's own functions (callgrind marks recursion as name'2),
# checked against its symbol table.
symbols = set(subprocess.run(["nm", "--defined-only", binary], capture_output=True,
                             text=True, check=True).stdout.split())
own = collections.Counter()
for (o, f), c in cost.items():
    if o == binary:
        own[f.split("'")[0]] += c
ordered = [f for f, _ in sorted(own.items(), key=lambda fc: (-fc[1], fc[0])) if f in symbols]
# Then what only the native run executed, by samples (perf lists them so).
listed = set(ordered)
for f in open(native).read().split():
    if f in symbols and f not in listed:
        ordered.append(f)
        listed.add(f)
with open(out, "w") as w:
    w.write("# The gateway's functions in the order the linker lays them out (#30):\n"
            "# those a benchmark run executes, by instructions spent in each, most\n"
            "# first. Made by bench/link-order.sh; read by build.rs.\n")
    w.write("\n".join(ordered) + "\n")
print(f"{len(ordered)} functions in {out}")
PY
