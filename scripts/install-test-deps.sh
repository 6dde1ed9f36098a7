#!/usr/bin/env bash
# Installs what the test suites need from Debian: Prosody and ejabberd (the
# real XMPP servers the end-to-end tests start on loopback with throwaway
# configs), slixmpp (the XMPP client library the tests use as the user, so our
# component is checked by a client that is not ours), Prosody's community
# modules (mod_privilege, for XEP-0356 roster pushes), Profanity and tmux (a
# real terminal client the tests drive), curl, and adduser (which the Debian
# package the tests build and install depends on), and PostgreSQL's server when
# no database is at hand. Does nothing when all are there.
set -euo pipefail

missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
command -v ejabberdctl >/dev/null 2>&1 || missing+=(ejabberd)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || missing+=(python3-slixmpp)
[ -e /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ] || missing+=(prosody-modules)
command -v profanity >/dev/null 2>&1 || missing+=(profanity)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The Debian package depends on it (its postinst makes a system user).
command -v adduser >/dev/null 2>&1 || missing+=(adduser)
# PostgreSQL's server, for a throwaway cluster, unless the tests have one
# ($DATABASE_URL, or a server on 127.0.0.1:5432: scripts/postgres-for-tests.sh).
if [ -z "${DATABASE_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null &&
  ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]} with apt-get"
# The packages' own services must not start: they would listen on every
# interface with the system config. The tests start their own, on loopback.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  made_policy=1
fi
cleanup() { [ "$made_policy" = 1 ] && $sudo rm -f "$policy"; return 0; }
trap cleanup EXIT
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
