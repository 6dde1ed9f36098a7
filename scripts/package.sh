#!/usr/bin/env bash
# Builds the Debian package (target/debian/sms-over-xmpp_*.deb) with
# cargo-deb, installing cargo-deb first if missing, and checks it:
#
#   scripts/package.sh            # build it, list it, verify its unit
#   scripts/package.sh --install  # also dpkg -i it and run the installed
#                                 # binary's --version and check (CI does)
#
# Under CI (CI=true) the package holds the debug build the other stages
# already made (target/debug): what is checked is the packaging (files,
# unit, maintainer scripts, config), and a fat-LTO release build would take
# a third of CI's time. A release's package is built without CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
# A known version: a newer cargo-deb may refuse the dev profile CI uses
# (3.8 warns that it will).
deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q " $deb_version\b"; then
  echo "installing cargo-deb $deb_version"
  cargo install cargo-deb --version "$deb_version" --locked --no-default-features
fi
# The binary first, so its manual page (`sms-over-xmpp man`) can go in
# the package too. Stripped: the release profile keeps debug info for
# profiling, which would make the package five times larger.
if [ "${CI:-}" = "true" ]; then
  profile=dev
  dir=target/debug
  cargo build -p sms-over-xmpp-bin --locked
else
  profile=release
  dir=target/release
  cargo build --release -p sms-over-xmpp-bin --locked
fi
"$dir/sms-over-xmpp" man | gzip -9n >"$dir/sms-over-xmpp.1.gz"
cargo deb -p sms-over-xmpp-bin --locked --no-build --strip --profile "$profile"
deb=$(ls -t target/debian/sms-over-xmpp_*.deb | head -n 1)
echo "built $deb"
dpkg-deb --info "$deb" >/dev/null
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/sms-over-xmpp ./etc/sms-over-xmpp/sms-over-xmpp.toml \
  ./usr/lib/systemd/system/sms-over-xmpp.service ./usr/share/doc/sms-over-xmpp/operations.md \
  ./usr/share/man/man1/sms-over-xmpp.1.gz; do
  grep -q " $f\$" <<<"$contents" || { echo "$deb lacks $f" >&2; exit 1; }
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit names /usr/bin/sms-over-xmpp: verify it against the built one.
  tmp=$(mktemp -d)
  sed "s#/usr/bin/sms-over-xmpp#$PWD/$dir/sms-over-xmpp#g" \
    packaging/debian/sms-over-xmpp.service >"$tmp/sms-over-xmpp.service"
  # Without a running systemd (a container) it cannot load the unit's
  # dependencies; only what it says of this unit counts.
  SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/sms-over-xmpp.service" >"$tmp/verify.log" 2>&1 || true
  if grep "sms-over-xmpp.service:" "$tmp/verify.log"; then
    echo "systemd-analyze verify found problems in the unit" >&2
    exit 1
  fi
  echo "systemd-analyze verify: the unit is clean"
  rm -rf "$tmp"
fi
if [ "${1:-}" = "--install" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo dpkg -i "$deb"
  /usr/bin/sms-over-xmpp --version
  $sudo /usr/bin/sms-over-xmpp check --config /etc/sms-over-xmpp/sms-over-xmpp.toml
  stat -c '%a %U:%G' /etc/sms-over-xmpp/sms-over-xmpp.toml | grep -q '^640 root:sms-over-xmpp$'
  # The shipped sandbox token is public: postinst made one of its own.
  if grep -q change-this-sandbox-token /etc/sms-over-xmpp/sms-over-xmpp.toml; then
    echo "the installed config still holds the public placeholder token" >&2
    exit 1
  fi
  zcat /usr/share/man/man1/sms-over-xmpp.1.gz | grep -q '^\.SH COMMANDS'
  echo "the package installs, and its binary checks its config"
fi
