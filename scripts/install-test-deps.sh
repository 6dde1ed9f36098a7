#!/usr/bin/env bash
# Installs what the test suites need from Debian: Prosody (the real XMPP
# server the end-to-end tests start on loopback) and slixmpp (the XMPP client
# library the tests use as the user, so our component is checked by a client
# that is not ours). Does nothing when both are there.
set -euo pipefail

missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || missing+=(python3-slixmpp)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]} with apt-get"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
