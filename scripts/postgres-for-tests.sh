# Sourced by scripts/test.sh: makes $DATABASE_URL name a PostgreSQL the
# tests may create databases on (each test makes its own and drops it).
#
# - $DATABASE_URL set: used as it is.
# - Else a server answering on 127.0.0.1:5432 (the project's machines run
#   one, trust auth): postgresql://postgres@127.0.0.1:5432/postgres.
# - Else a throwaway cluster from Debian's `postgresql` (installed by
#   scripts/install-test-deps.sh), on loopback port 55432, run as the
#   postgres user (it refuses root), removed when the tests end.

pg_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -n "${DATABASE_URL:-}" ]; then
  echo "PostgreSQL for the tests: \$DATABASE_URL"
elif pg_port_open 5432; then
  export DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres"
  echo "PostgreSQL for the tests: the server on 127.0.0.1:5432"
else
  pg_bin=/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -V | tail -n 1)/bin
  pg_dir=$(mktemp -d /tmp/sox-pg.XXXXXX)
  chown postgres:postgres "$pg_dir"
  runuser -u postgres -- "$pg_bin/initdb" -A trust -U postgres -D "$pg_dir/data" >"$pg_dir/initdb.log"
  runuser -u postgres -- "$pg_bin/postgres" -D "$pg_dir/data" -p 55432 \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$pg_dir" >"$pg_dir/server.log" 2>&1 &
  pg_pid=$!
  # SIGINT to the postmaster itself (runuser does not pass it on):
  # PostgreSQL's fast shutdown, the tests being done by then.
  stop_pg() {
    kill -INT "$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null)" 2>/dev/null || true
    wait "$pg_pid" 2>/dev/null || true
    rm -rf "$pg_dir"
  }
  trap stop_pg EXIT
  for _ in $(seq 100); do pg_port_open 55432 && break; sleep 0.1; done
  pg_port_open 55432 || { cat "$pg_dir/server.log" >&2; echo "the throwaway PostgreSQL did not start" >&2; exit 1; }
  export DATABASE_URL="postgresql://postgres@127.0.0.1:55432/postgres"
  echo "PostgreSQL for the tests: a throwaway cluster on 127.0.0.1:55432"
fi
