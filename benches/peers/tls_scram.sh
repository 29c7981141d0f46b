#!/bin/bash
# Connection set-up (SCRAM-SHA-256 login, one connection per transaction)
# and single-row INSERT throughput (4 clients), plaintext vs TLS, for
# sluice and for PostgreSQL (scram-sha-256, ssl = on) started here on the
# same machine, measured alternately in the same run with pgbench.
#
#   cargo build --release && bash benches/peers/tls_scram.sh [rounds]
#
# Needs openssl, pgbench, initdb/pg_ctl; run as root it runs PostgreSQL as
# the `postgres` user. Prints one line per round and mode.
set -euo pipefail
ROUNDS=${1:-3}
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
W=$(mktemp -d /tmp/sluice-tls-bench.XXXX)
chmod 755 "$W"
trap 'kill ${SPID:-0} 2>/dev/null || true; pg_as "pg_ctl -D $W/pg/data stop -m fast" >/dev/null 2>&1 || true' EXIT
pg_as() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else bash -c "$1"; fi; }
cd "$W"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 -days 2 -subj "/CN=bench CA" "${ec[@]}" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -subj "/CN=localhost" "${ec[@]}" -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null
printf 'benchpw\n' > pw && chmod 600 pw server.key
mkdir pg && cp server.pem server.key pw pg/ && chmod 700 pg
[ "$(id -u)" = 0 ] && chown -R postgres pg
pg_as "initdb -D $W/pg/data -U bench --auth=scram-sha-256 --pwfile=$W/pg/pw" > /dev/null
printf "ssl = on\nssl_cert_file = '%s/pg/server.pem'\nssl_key_file = '%s/pg/server.key'\nport = 6610\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s/pg'\n" "$W" "$W" "$W" >> pg/data/postgresql.conf
pg_as "pg_ctl -D $W/pg/data -l $W/pg/log start" > /dev/null
printf '[auth]\npassword_file = "%s/pw"\n[tls]\ncert = "%s/server.pem"\nkey = "%s/server.key"\n' "$W" "$W" "$W" > sluice.toml
"$BIN" serve --data-dir sdata --pg-addr 127.0.0.1:6620 --http-addr 127.0.0.1:6621 --config sluice.toml > /dev/null 2> sluice.err &
SPID=$!
sleep 2
export PGPASSWORD=benchpw
psql -q "host=127.0.0.1 port=6620 user=sluice dbname=sluice" -c "CREATE STREAM t (n BIGINT, s TEXT)"
psql -q "host=127.0.0.1 port=6610 user=bench dbname=postgres" -c "CREATE TABLE t (n bigint, s text)"
echo "SELECT 1;" > select1.sql
echo "INSERT INTO t VALUES (1, 'x');" > insert.sql
sluice=(-h 127.0.0.1 -p 6620 -U sluice sluice)
pg=(-h 127.0.0.1 -p 6610 -U bench postgres)
connect_ms() { PGSSLMODE=$1 pgbench -n -C -T 5 -c 1 -f select1.sql "${@:2}" 2>&1 | awk '/average connection/ {print $5}'; }
insert_tps() { PGSSLMODE=$1 pgbench -n -T 5 -c 4 -f insert.sql "${@:2}" 2>&1 | awk '/^tps/ {printf "%.0f", $3}'; }
for round in $(seq "$ROUNDS"); do
  for mode in disable require; do
    echo "round $round sslmode=$mode: connect ms sluice $(connect_ms $mode "${sluice[@]}") pg $(connect_ms $mode "${pg[@]}")" \
         "| 1-row INSERT/s, 4 clients: sluice $(insert_tps $mode "${sluice[@]}") pg $(insert_tps $mode "${pg[@]}")"
  done
done
