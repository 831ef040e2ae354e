# Source this file: starts a throw-away PostgreSQL on loopback for the test run and
# exports FEDIMG_TEST_POSTGRES_URL (a superuser URL; tests create one database per site).
# Installs Debian's postgresql when missing and we are root with apt-get; otherwise
# the PostgreSQL tests are skipped (unless FEDIMG_REQUIRE_POSTGRES=1, as in CI).
# The cluster and its data are removed when the sourcing shell exits.

_fedimg_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

_fedimg_pg_start() {
  local bin dir port password run_as=()
  bin="$(_fedimg_pg_bin)"
  if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql (Debian package) for the PostgreSQL tests" >&2
    (apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1; }) ||
      echo "could not install postgresql" >&2
    bin="$(_fedimg_pg_bin)"
  fi
  if [ -z "$bin" ]; then
    echo "PostgreSQL not available: the PostgreSQL tests will be skipped" >&2
    return 0
  fi
  dir="$(mktemp -d /tmp/fedimg-pg.XXXXXX)"
  if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    run_as=(runuser -u postgres --)
  fi
  password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  "${run_as[@]}" sh -c "umask 077 && printf '%s\n' '$password' > '$dir/pwfile'"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U fedimg --auth=scram-sha-256 --pwfile="$dir/pwfile" -E UTF8 >"$dir/initdb.log" 2>&1 ||
    { echo "initdb failed: see $dir/initdb.log" >&2; return 1; }
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null ||
    { echo "PostgreSQL did not start: see $dir/server.log" >&2; return 1; }
  export FEDIMG_TEST_POSTGRES_URL="postgresql://fedimg:$password@127.0.0.1:$port/postgres"
  _FEDIMG_PG_STOP=("${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
  _FEDIMG_PG_DIR="$dir"
  trap '_fedimg_pg_stop' EXIT
  echo "PostgreSQL for tests on 127.0.0.1:$port" >&2
}

_fedimg_pg_stop() {
  "${_FEDIMG_PG_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$_FEDIMG_PG_DIR"
}

if [ -z "${FEDIMG_TEST_POSTGRES_URL:-}" ]; then
  _fedimg_pg_start
fi
