#!/usr/bin/env bash
# Quick start: a throwaway Prosody on loopback and the gateway with the
# built-in sandbox provider, so no carrier account is needed.
#
#   scripts/quickstart.sh           # run until Ctrl-C; state kept in $QS_DIR
#   scripts/quickstart.sh --fresh   # the same, starting over (state wiped first)
#   scripts/quickstart.sh --smoke   # start, relay a text, stop (used by the tests)
#
# Prosody listens on 127.0.0.1:15222 (clients) and :15347 (the component), so
# it does not collide with a system Prosody. Everything lives in $QS_DIR and
# is kept from one run to the next (users who registered, texts waiting).
# Nothing is touched before the ports are found free: a second quick start
# while one runs says so and leaves the first alone.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
fresh=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --fresh) fresh=1 ;;
    *) echo "usage: $0 [--fresh] [--smoke]" >&2; exit 2 ;;
  esac
done
QS_DIR=${QS_DIR:-/tmp/sms-over-xmpp-quickstart}
C2S_PORT=${C2S_PORT:-15222}
COMPONENT_PORT=${COMPONENT_PORT:-15347}
HTTP_PORT=9677
HTTP=http://127.0.0.1:$HTTP_PORT/hooks/sandbox
AUTH="Authorization: Bearer quickstart-sandbox-token"

# Check first, touch nothing: a port in use is most likely a quick start
# already running, whose state must not be wiped under it.
busy=()
for port in "$C2S_PORT" "$COMPONENT_PORT" "$HTTP_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    busy+=("$port")
  fi
done
if [ "${#busy[@]}" -gt 0 ]; then
  echo "error: 127.0.0.1 port(s) ${busy[*]} in use: a quick start (or something else) is running." >&2
  if [ -f "$QS_DIR/prosody.pid" ] && kill -0 "$(cat "$QS_DIR/prosody.pid")" 2>/dev/null; then
    echo "The quick start in $QS_DIR runs (Prosody pid $(cat "$QS_DIR/prosody.pid")): stop it with Ctrl-C in its terminal first. Nothing was changed." >&2
  else
    echo "Free the port(s), or set C2S_PORT / COMPONENT_PORT. Nothing was changed." >&2
  fi
  exit 1
fi

if ! command -v prosody >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || [ ! -e /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing prosody, its community modules and curl with apt-get"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prosody prosody-modules curl
fi

if [ "$fresh" = 1 ]; then
  echo "--fresh: wiping $QS_DIR"
  rm -rf "$QS_DIR"
fi
mkdir -p "$QS_DIR/data" "$QS_DIR/certs"
# With Debian's prosody-modules, Prosody grants the gateway roster access
# (XEP-0356): contacts then appear in rosters with their names.
PRIVILEGE_MODULE=""
PRIVILEGED=""
COMPONENT_MODULES=""
if [ -e /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ] || [ -e /usr/lib/prosody/modules/mod_privilege.lua ]; then
  PRIVILEGE_MODULE=' "privilege";'
  PRIVILEGED='  privileged_entities = { ["sms.localhost"] = { roster = "both" } }'
  COMPONENT_MODULES='  modules_enabled = { "privilege" }'
fi
cat > "$QS_DIR/prosody.cfg.lua" <<CFG
run_as_root = true
pidfile = "$QS_DIR/prosody.pid"
data_path = "$QS_DIR/data"
interfaces = { "127.0.0.1" }
c2s_ports = { $C2S_PORT }
component_ports = { $COMPONENT_PORT }
component_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "iq"; "posix"; "offline";$PRIVILEGE_MODULE }
modules_disabled = { "s2s" }
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
log = { info = "$QS_DIR/prosody.log" }
-- No TLS on this loopback-only server; a directory of its own, so Prosody
-- does not complain about the system's.
certificates = "$QS_DIR/certs"
VirtualHost "localhost"
$PRIVILEGED
Component "sms.localhost"
  component_secret = "quickstart-secret"
$COMPONENT_MODULES
CFG
for who in alice bob; do
  # Kept from an earlier run: registered once.
  if [ ! -e "$QS_DIR/data/localhost/accounts/$who.dat" ]; then
    prosodyctl --config "$QS_DIR/prosody.cfg.lua" register "$who" localhost "${who}pw" >/dev/null
  fi
done

echo "building sms-over-xmpp (the first build takes several minutes; cargo shows its progress)"
cargo build -p sms-over-xmpp-bin
# A log per run: the waits below look for this run's lines.
: >"$QS_DIR/prosody.log"
prosody --config "$QS_DIR/prosody.cfg.lua" -F &
prosody_pid=$!
gateway_pid=""
cleanup() {
  # Each step may find its process gone already: none may stop the rest.
  set +e
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
  # A gateway started again by hand from $QS_DIR/gateway.sh.
  [ -f "$QS_DIR/gateway.pid" ] && kill "$(cat "$QS_DIR/gateway.pid")" 2>/dev/null
  rm -f "$QS_DIR/gateway.pid"
  kill "$prosody_pid" 2>/dev/null && wait "$prosody_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT
# Ctrl-C or a kill: exit, which runs cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$COMPONENT_PORT") 2>/dev/null && break
  sleep 0.1
done

# The example config, with the component port and the store moved by
# environment overrides: the store lives in $QS_DIR with everything else.
# The same line, in another terminal, starts the gateway alone again after
# `kill $(cat $QS_DIR/gateway.pid)` (see below).
cat > "$QS_DIR/gateway.sh" <<RUN
#!/bin/sh
cd "$PWD"
echo \$\$ > "$QS_DIR/gateway.pid"
SMS_OVER_XMPP_XMPP__SERVER="127.0.0.1:$COMPONENT_PORT" \\
SMS_OVER_XMPP_STORE__PATH="$QS_DIR/sms-over-xmpp.db" \\
SMS_OVER_XMPP_MEDIA__DIR="$QS_DIR/media" \\
  exec target/debug/sms-over-xmpp run --config examples/sandbox.toml
RUN
chmod +x "$QS_DIR/gateway.sh"
"$QS_DIR/gateway.sh" &
gateway_pid=$!

for _ in $(seq 100); do
  grep -q "External component successfully authenticated" "$QS_DIR/prosody.log" 2>/dev/null &&
    (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break
  sleep 0.1
done

if [ "$smoke" = 1 ]; then
  grep -q "External component successfully authenticated" "$QS_DIR/prosody.log"
  curl -fsS "http://127.0.0.1:9677/hooks/" | grep -q sms-over-xmpp
  # An inbound text for Alice (she is offline: Prosody keeps it for her).
  curl -fsS -X POST -H "$AUTH" -H 'Content-Type: application/json' \
    -d '{"from":"+15557654321","to":"+15550001111","body":"Hi Alice, from the quick start"}' \
    "$HTTP/message" >/dev/null
  # A forged one is refused.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "$HTTP/message")
  [ "$code" = 403 ]
  curl -fsS -H "$AUTH" "$HTTP/outbox" | grep -q '^\['
  echo "quick start smoke test: OK"
  exit 0
fi

cat <<MSG

sms-over-xmpp is running against a throwaway Prosody. Log in with any XMPP client
(Gajim, Dino, Profanity, ...):

  account   alice@localhost     password  alicepw
  server    127.0.0.1  port $C2S_PORT   (this test server has no TLS)

  Profanity:  /account add alice@localhost
              /account set alice@localhost server 127.0.0.1
              /account set alice@localhost port $C2S_PORT
              /account set alice@localhost tls disable
              /connect alice@localhost
  Gajim:      in its first window: alice@localhost, alicepw, tick Advanced,
              Log In; Hostname 127.0.0.1, Port $C2S_PORT, Type PLAIN, Log In;
              Connect, then Connect Anyway (this server has no TLS)

Then start a chat with  +15557654321@sms.localhost  and type something
(or, in Gajim: Accounts > Discover Services > sms.localhost > Command >
New chat by number). bob@localhost (password bobpw) is not a user: he can
register with the number the sandbox offers (Discover Services > Register).
The sandbox "sends" it; see what left:

  curl -H '$AUTH' $HTTP/outbox

Have the phone answer:

  curl -X POST -H '$AUTH' -d '{"from":"+15557654321","to":"+15550001111","body":"Hi Alice"}' $HTTP/message

Send yourself a picture: the gateway fetches it (as it fetches a carrier's)
and serves it from its own /media/ (files in $QS_DIR/media). Offline, the
words come after 20 s with a line saying the picture is on its way, and a
line says when the gateway gives up on it:

  curl -X POST -H '$AUTH' -d '{"from":"+15557654321","to":"+15550001111","body":"Look","media":["https://www.debian.org/Pics/openlogo-50.png"]}' $HTTP/message

A group text from two numbers: you are invited to its room
(+15551112222,+15557654321@sms.localhost); join it, and what you write there
goes to both:

  curl -X POST -H '$AUTH' -d '{"from":"+15557654321","to":"+15550001111","cc":["+15551112222"],"body":"Dinner at 8?"}' $HTTP/message

and report your text delivered (with a receipt in the client), with the "id"
the outbox shows for it:

  curl -X POST -H '$AUTH' -d '{"message_id":"<id from the outbox>","status":"delivered"}' $HTTP/status

Stop and start the gateway alone (Prosody runs on). What it has stored
(texts not yet taken by Prosody, chats not yet accepted by the carrier,
users who registered) is still there when it starts again; a carrier
whose webhook finds it stopped tries again later:

  kill \$(cat $QS_DIR/gateway.pid)
  $QS_DIR/gateway.sh &

State (users, texts waiting, media) is kept in $QS_DIR for the next run;
scripts/quickstart.sh --fresh starts over. Ctrl-C stops everything.
MSG
wait "$gateway_pid"
