#!/usr/bin/env bash
# Syscalls, context switches and CPU time of one process (PID) over one sysbench run against PORT, per
# query: bench/lab/syscount.sh PID PORT [SECS]. Uses perf tracepoints (no hardware counters needed).
set -euo pipefail
pid=$1 port=$2 secs=${3:-5}
ev=task-clock,context-switches,cpu-migrations
for s in epoll_wait epoll_pwait epoll_pwait2 recvfrom sendto read write readv writev recvmsg sendmsg epoll_ctl futex; do
  ev+=",syscalls:sys_enter_$s"
done
out=$(mktemp)
perf stat -x, -e "$ev" -p "$pid" -o "$out" -- sleep "$secs" &
sp=$!
q=$(sysbench "${TEST:-oltp_point_select}" --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user=sb --mysql-password=sb \
  --mysql-db=sbtest --tables=4 --table-size=10000 --db-ps-mode="$( [ "${PS:-on}" = on ] && echo auto || echo disable )" \
  --threads="${THREADS:-8}" --time="$secs" run 2>&1 | awk '/queries:/ {print $2}')
wait $sp
awk -F, -v q="$q" 'NF>3 && $1+0>0 { printf "%-36s %12.0f  %8.3f per query\n", $3, $1, $1/q }' "$out"
echo "queries $q"
rm -f "$out"
