#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests, the demo and benchmarks, run as the postgres user
# on a free loopback port, with trust authentication on loopback only.
#
#   scripts/pg-cluster.sh start DIR [PORT]  # initdb + start; writes DIR/env (PGHOST, PGPORT, PGUSER)
#   scripts/pg-cluster.sh seed DIR      # Che-like databases dbche and keycloak owned by role che
#   scripts/pg-cluster.sh checksum DIR  # one line per table: database.table rows md5 (for comparisons)
#   scripts/pg-cluster.sh stop DIR      # stop and remove
set -euo pipefail
cmd=${1:?usage: pg-cluster.sh start|seed|checksum|stop DIR}
dir=${2:?usage: pg-cluster.sh start|seed|checksum|stop DIR}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")" && pwd)
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir"
  mkdir -p "$dir/data" "$dir/socket"
  chown postgres: "$dir/data" "$dir/socket"
  as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  # A port found free here can be taken by another process before the server binds it (every
  # outgoing connection takes an ephemeral port from the same range): then try another one.
  for attempt in 1 2 3 4 5; do
    port=${3:-$(python3 "$here/free-port.py")}
    : > "$dir/data/server.log"; chown postgres: "$dir/data/server.log" 2>/dev/null || true
    if as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
        -o "-p $port -h 127.0.0.1 -k $dir/socket -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null; then
      break
    fi
    if [ -n "${3:-}" ] || [ "$attempt" = 5 ] || ! grep -q "could not bind\|could not create any TCP/IP sockets" "$dir/data/server.log"; then
      echo "pg-cluster: PostgreSQL did not start on port $port:" >&2
      tail -n 20 "$dir/data/server.log" >&2
      exit 1
    fi
  done
  printf 'export PGHOST=127.0.0.1\nexport PGPORT=%s\nexport PGUSER=postgres\nexport PGDATABASE=postgres\n' "$port" > "$dir/env"
  echo "pg-cluster: PostgreSQL on 127.0.0.1:$port (data in $dir/data)"
  ;;
seed)
  # shellcheck disable=SC1091
  source "$dir/env"
  psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE che LOGIN PASSWORD 'che-password';
CREATE ROLE keycloak LOGIN PASSWORD 'keycloak-password';
CREATE DATABASE dbche OWNER che;
CREATE DATABASE keycloak OWNER keycloak;
SQL
  psql -X -q -v ON_ERROR_STOP=1 -d dbche >/dev/null <<'SQL'
SET ROLE che;
CREATE TABLE che_workspace (id bigserial PRIMARY KEY, name text NOT NULL, namespace text NOT NULL, devfile jsonb, created timestamptz DEFAULT now());
CREATE INDEX che_workspace_ns ON che_workspace (namespace, name);
CREATE TABLE che_user_preferences (user_id text, name text, value text, PRIMARY KEY (user_id, name));
CREATE SEQUENCE che_event_seq START 1000;
INSERT INTO che_workspace (name, namespace, devfile)
  SELECT 'ws-' || g, 'user' || (g % 50) || '-che', jsonb_build_object('schemaVersion', '2.2.0', 'components', g % 7, 'url', 'https://che.example.com/ws/' || g)
  FROM generate_series(1, 20000) g;
INSERT INTO che_user_preferences SELECT 'user' || g, 'theme', CASE WHEN g % 2 = 0 THEN 'dark' ELSE 'light' END FROM generate_series(1, 5000) g;
SELECT setval('che_event_seq', 4242);
SQL
  psql -X -q -v ON_ERROR_STOP=1 -d keycloak <<'SQL'
SET ROLE keycloak;
CREATE TABLE user_entity (id uuid PRIMARY KEY, username text UNIQUE NOT NULL, email text, realm_id text NOT NULL, created_timestamp bigint);
CREATE TABLE credential (id bigserial PRIMARY KEY, user_id uuid REFERENCES user_entity(id), secret_data text, type text);
INSERT INTO user_entity SELECT md5('u' || g)::uuid, 'user' || g, 'user' || g || '@example.com', 'che', 1700000000 + g FROM generate_series(1, 10000) g;
INSERT INTO credential (user_id, secret_data, type) SELECT md5('u' || g)::uuid, repeat(md5(g::text), 4), 'password' FROM generate_series(1, 10000) g;
SQL
  echo "pg-cluster: seeded dbche and keycloak"
  ;;
checksum)
  # shellcheck disable=SC1091
  source "$dir/env"
  for db in $(psql -X -At -c "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1"); do
    owner=$(psql -X -At -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$db'")
    echo "$db owner=$owner"
    for t in $(psql -X -At -d "$db" -c "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1"); do
      psql -X -At -d "$db" -c "SELECT '$db.$t ' || count(*) || ' ' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '-') || ' owner=' || (SELECT tableowner FROM pg_tables WHERE schemaname || '.' || tablename = '$t') FROM $t x"
    done
    psql -X -At -d "$db" -c "SELECT '$db seq ' || sequencename || ' ' || coalesce(last_value::text, 'null') FROM pg_sequences ORDER BY 1"
    psql -X -At -d "$db" -c "SELECT '$db index ' || indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
  done
  psql -X -At -c "SELECT 'role ' || rolname || ' login=' || rolcanlogin FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
  ;;
stop)
  if [ -d "$dir/data" ]; then as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  ;;
*) echo "usage: pg-cluster.sh start|seed|checksum|stop DIR" >&2; exit 2 ;;
esac
