#!/usr/bin/env bash
# Shardgate's RESP front against twemproxy and a lone redis-server, in ONE
# run, rounds interleaved (not run by CI; needs a release build and the
# Debian packages redis-server, redis-tools, nutcracker and wrk):
#
#   cargo build --release -p shardgate
#   apt-get install redis-server redis-tools nutcracker wrk
#   bash host/proxy/benches/resp-vs-twemproxy.sh [ROUNDS]
#
# BENCH_TARGETS (default "shardgate twemproxy redis") and BENCH_TESTS
# (default "set get mget") pick a subset; BENCH_HTTP=0 skips the HTTP part.
#
# Targets:
#   shardgate  `shardgate dev` (one process: meta, 3 nodes, the proxy with
#              proxy.resp_listen; rendezvous, 1 replica)
#   twemproxy  nutcracker (ketama, fnv1a_64) in front of 3 redis-servers
#   redis      one redis-server, direct
# Workloads: redis-benchmark -c 64 with -P 1 and -P 16: SET, GET and MGET
# of 10 keys (`redis-benchmark` has no mget test: the command is given
# explicitly), 100-byte values, keys from -r 100000 (filled first).
# Server-side CPU: utime+stime (fields 14 and 15 of /proc/PID/stat) of the
# target's processes (shardgate: the one dev process; twemproxy: nutcracker
# and the 3 redis-servers; redis: the one redis-server) over the run,
# divided by the requests (a MGET counts as one request).
# Then the HTTP path: wrk -t2 -c64 -d5s GET of one 100-byte key through the
# proxy and straight to a node of the same dev process.
set -euo pipefail
rounds=${1:-3}
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin="$root/target/release/shardgate"
for tool in "$bin" redis-server redis-benchmark redis-cli nutcracker wrk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

base=${BENCH_PORT_BASE:-27000}
sg_http=$base; sg_resp=$((base + 379)); sg_meta=$((base + 101)); sg_node=$((base + 201))
tw_port=$((base + 500)); r1=$((base + 601)); r2=$((base + 602)); r3=$((base + 603)); rd=$((base + 700))

"$bin" dev --proxy-port "$sg_http" --resp-port "$sg_resp" --meta-port "$sg_meta" --node-port "$sg_node" >"$work/dev.log" 2>&1 &
sg_pid=$!; pids+=("$sg_pid")
for p in $r1 $r2 $r3 $rd; do
  redis-server --port "$p" --save '' --appendonly no --bind 127.0.0.1 --daemonize no >"$work/redis-$p.log" 2>&1 &
  pids+=("$!")
done
r_pids=("${pids[@]:1:3}"); rd_pid=${pids[4]}
cat >"$work/nutcracker.yml" <<YML
alpha:
  listen: 127.0.0.1:$tw_port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:$r1:1
   - 127.0.0.1:$r2:1
   - 127.0.0.1:$r3:1
YML
nutcracker -c "$work/nutcracker.yml" -o "$work/nutcracker.log" &
tw_pid=$!; pids+=("$tw_pid")

for _ in $(seq 1 300); do
  if grep -q "a local cluster is running" "$work/dev.log" && redis-cli -p "$tw_port" ping >/dev/null 2>&1 && redis-cli -p "$rd" ping >/dev/null 2>&1; then break; fi
  sleep 0.1
done
grep -q "a local cluster is running" "$work/dev.log" || { cat "$work/dev.log"; exit 1; }

ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
hz=$(getconf CLK_TCK)
declare -A port_of=([shardgate]=$sg_resp [twemproxy]=$tw_port [redis]=$rd)
procs_of() { case $1 in shardgate) echo "$sg_pid";; twemproxy) echo "$tw_pid ${r_pids[*]}";; redis) echo "$rd_pid";; esac; }
mget=(MGET); for i in $(seq 1 10); do mget+=("key:__rand_int__"); done

targets=${BENCH_TARGETS:-shardgate twemproxy redis}
tests=${BENCH_TESTS:-set get mget}
# Fill every target's keyspace first.
for t in $targets; do
  redis-benchmark -p "${port_of[$t]}" -c 64 -P 16 -n 300000 -r 100000 -d 100 -t set -q >/dev/null 2>&1
done

results="$work/results.tsv"
for round in $(seq 1 "$rounds"); do
  for P in 1 16; do
    n=$(( P == 1 ? 100000 : 400000 ))
    for test in $tests; do
      for t in $targets; do
        # shellcheck disable=SC2046
        before=$(ticks $(procs_of "$t"))
        if [ "$test" = mget ]; then
          out=$(redis-benchmark -p "${port_of[$t]}" -c 64 -P "$P" -n "$n" -r 100000 -q "${mget[@]}" 2>/dev/null | tr '\r' '\n' | grep -a "requests per second" | tail -1 || true)
        else
          out=$(redis-benchmark -p "${port_of[$t]}" -c 64 -P "$P" -n "$n" -r 100000 -d 100 -t "$test" -q 2>/dev/null | tr '\r' '\n' | grep -a "requests per second" | tail -1 || true)
        fi
        # shellcheck disable=SC2046
        after=$(ticks $(procs_of "$t"))
        rps=$(echo "$out" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/'); rps=${rps:-failed}
        us=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
        printf '%s\t%s\tP%s\t%s\t%s\t%s\n' "$round" "$test" "$P" "$t" "$rps" "$us" | tee -a "$results"
      done
    done
  done
done

echo
echo "median of $rounds rounds: requests/s and server-side CPU us/request"
printf '| workload | shardgate req/s | twemproxy req/s | redis direct req/s | shardgate us/req | twemproxy us/req | redis us/req |\n|---|---|---|---|---|---|---|\n'
for P in P1 P16; do
  for test in $tests; do
    row="| $test -c 64 -$P |"
    for col in 5 6; do
      for t in shardgate twemproxy redis; do
        v=$(awk -F'\t' -v a="$test" -v p="$P" -v t="$t" -v c="$col" '$2==a && $3==p && $4==t {print $c}' "$results" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
        row="$row $v |"
      done
    done
    echo "$row"
  done
done

[ "${BENCH_HTTP:-1}" = 0 ] && exit 0

# The HTTP path: wrk through the proxy and straight to node-1, CPU of the
# one dev process (proxy and nodes), rounds interleaved.
head -c 100 /dev/zero | tr '\0' 'x' >"$work/value"
curl -fsS -X PUT --data-binary @"$work/value" "http://127.0.0.1:$sg_http/v1/keys/bench-0" >/dev/null
owner=$(curl -fsS "http://127.0.0.1:$sg_http/v1/owners/bench-0" | sed -E 's/.*"owners":\["node-([0-9]+)".*/\1/')
node_port=$((sg_node + owner - 1))
echo
echo "| HTTP GET, wrk -t2 -c64 -d5s | round | req/s | dev process us/req |"
echo "|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for target in proxy node; do
    url="http://127.0.0.1:$([ $target = proxy ] && echo "$sg_http" || echo "$node_port")/v1/keys/bench-0"
    before=$(ticks "$sg_pid")
    out=$(wrk -t2 -c64 -d5s "$url")
    after=$(ticks "$sg_pid")
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    us=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
    echo "| $target | $round | $rps | $us |"
  done
done
