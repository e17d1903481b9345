#!/usr/bin/env bash
# Scheduler lab for the single-executor MySQL gap (bench/analysis.md, stops 22-23): one MariaDB on a temp
# port, Furrow (one executor) and haproxy (one thread) in front of it, sysbench runs alternated in pairs,
# each proxy thread's schedstat (run / wait ns) read before and after every run.
#
#   bench/lab/mysql-sched.sh setup                 # MariaDB + sysbench tables, once (LAB=/tmp/furrow-lab)
#   bench/lab/mysql-sched.sh pair BIN_A [BIN_B]     # ROUNDS alternated pairs, prints throughput per run
#     BIN_B may be "haproxy" (the default); BIN_A/BIN_B a furrow binary. Env: ROUNDS=6 SECS=5 THREADS=8
#     TEST=oltp_point_select PS=on (prepared) EXEC=1 (Furrow executors) EXTRA_ENV_A/B="VAR=1"
#   bench/lab/mysql-sched.sh stop
set -euo pipefail
LAB=${LAB:-/tmp/furrow-lab}
MY_PORT=${MY_PORT:-23306}
A_PORT=23307
B_PORT=23308
ROUNDS=${ROUNDS:-6}
SECS=${SECS:-5}
THREADS=${THREADS:-8}
TEST=${TEST:-oltp_point_select}
PS=${PS:-on}
EXEC=${EXEC:-1}
sb() {
  sysbench "$TEST" --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=sb --mysql-password=sb \
    --mysql-db=sbtest --tables=4 --table-size=10000 --db-ps-mode="$( [ "$PS" = on ] && echo auto || echo disable )" \
    "${@:2}"
}
setup() {
  mkdir -p "$LAB"
  if [ ! -d "$LAB/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$LAB/data" --auth-root-authentication-method=normal >"$LAB/install.log" 2>&1
  fi
  mariadbd --no-defaults --datadir="$LAB/data" --port="$MY_PORT" --bind-address=127.0.0.1 \
    --socket="$LAB/my.sock" --user=root --skip-log-bin --innodb-buffer-pool-size=256M \
    --max-connections=500 >"$LAB/mariadb.log" 2>&1 &
  for _ in $(seq 100); do mariadb -uroot -S "$LAB/my.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb -uroot -S "$LAB/my.sock" -e "CREATE DATABASE IF NOT EXISTS sbtest;
    CREATE USER IF NOT EXISTS sb@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('sb');
    GRANT ALL ON sbtest.* TO sb@'%'; DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES;"
  sb "$MY_PORT" prepare >"$LAB/prepare.log" 2>&1 || true
  echo "MariaDB on $MY_PORT, data in $LAB"
}
start_a() { # furrow binary on A_PORT
  local hash
  hash=$(mariadb -uroot -S "$LAB/my.sock" -N -e "SELECT PASSWORD('sb')")
  cat >"$LAB/furrow-$2.toml" <<TOML
[[listeners]]
name = "lab"
kind = "mysql"
address = "127.0.0.1:$2"
group = "db"

[mysql_groups.db]
user = "sb"
password = "sb"
primary = { name = "db", address = "127.0.0.1:$MY_PORT" }
replicas = []

[users.sb]
password_native = "$hash"
TOML
  env ${3:-} "$1" --log warn proxy --config "$LAB/furrow-$2.toml" --executors "$EXEC" >"$LAB/furrow-$2.log" 2>&1 &
  echo $!
}
start_haproxy() {
  cat >"$LAB/haproxy.cfg" <<CFG
global
  nbthread ${HATHREADS:-1}
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:$1
  default_backend be
backend be
  server s0 127.0.0.1:$MY_PORT
CFG
  haproxy -db -f "$LAB/haproxy.cfg" >"$LAB/haproxy.log" 2>&1 &
  echo $!
}
# sum of run and wait ns over the process's threads named like $2 (all threads when empty)
sched() {
  local run=0 wait=0 r w
  for t in /proc/"$1"/task/*; do
    if [ -n "${2:-}" ] && ! grep -q "$2" "$t/comm"; then continue; fi
    read -r r w _ <"$t/schedstat"; run=$((run + r)); wait=$((wait + w))
  done
  echo "$run $wait"
}
onerun() { # name port pid threadpat
  local s0 s1 tps
  s0=$(sched "$3" "$4")
  tps=$(sb "$2" run --threads="$THREADS" --time="$SECS" --report-interval=0 2>&1 | awk '/queries:/ {gsub(/\(/,"",$3); print $3}')
  s1=$(sched "$3" "$4")
  read -r r0 w0 <<<"$s0"; read -r r1 w1 <<<"$s1"
  awk -v n="$1" -v t="$tps" -v r=$((r1-r0)) -v w=$((w1-w0)) 'BEGIN { printf "%-3s q/s %8.0f  ran %5.2f s  waited %5.2f s\n", n, t, r/1e9, w/1e9 }'
  echo "$1 $tps" >>"$LAB/results"
}
pair() {
  local a=$1 b=${2:-haproxy} pa pb pat_b=""
  : >"$LAB/results"
  pa=$(start_a "$a" "$A_PORT" "${EXTRA_ENV_A:-}")
  if [ "$b" = haproxy ]; then pb=$(start_haproxy "$B_PORT"); pat_b=""; else pb=$(start_a "$b" "$B_PORT" "${EXTRA_ENV_B:-}"); pat_b="furrow-"; fi
  sleep 1.5
  sb "$A_PORT" run --threads="$THREADS" --time=2 >/dev/null 2>&1 || { echo "A failed"; cat "$LAB/furrow-$A_PORT.log"; }
  sb "$B_PORT" run --threads="$THREADS" --time=2 >/dev/null 2>&1 || echo "B failed"
  for i in $(seq "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then onerun A "$A_PORT" "$pa" furrow-; onerun B "$B_PORT" "$pb" "$pat_b"
    else onerun B "$B_PORT" "$pb" "$pat_b"; onerun A "$A_PORT" "$pa" furrow-; fi
  done
  kill "$pa" "$pb" 2>/dev/null || true
  wait "$pa" "$pb" 2>/dev/null || true
  python3 - "$LAB/results" <<'PY'
import sys, statistics as st
a=[float(l.split()[1]) for l in open(sys.argv[1]) if l.startswith('A ')]
b=[float(l.split()[1]) for l in open(sys.argv[1]) if l.startswith('B ')]
r=[x/y for x,y in zip(a,b)]
print(f"A/B median {st.median(r):.3f}  ratios {' '.join(f'{x:.3f}' for x in r)}  A ahead {sum(x>1 for x in r)}/{len(r)}")
PY
}
stop() { mariadb-admin -uroot -S "$LAB/my.sock" shutdown 2>/dev/null || true; }
"$@"
