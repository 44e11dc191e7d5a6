#!/usr/bin/env bash
# Throughput of the container image against the host build, same run:
# a node and a proxy (one `shardgate serve` with meta + node + proxy, a
# 100-byte key, rendezvous) served by
#   host    target/release/shardgate (glibc, glibc malloc)
#   image   the image built by build-image.sh (static musl, mimalloc)
#   musl    the same image built with --features musl-system-allocator
# each with `--network host`, measured with `wrk -t2 -c64 -d5s` straight to
# the node and through the proxy, rounds interleaved. CPU per request is
# utime+stime of the serving process (from /proc/PID/stat) divided by the
# requests wrk reports. Needs: wrk, docker, both images, the host build:
#
#   cargo build --release -p shardgate
#   bash config/docker/build-image.sh shardgate:latest
#   SHARDGATE_FEATURES=musl-system-allocator bash config/docker/build-image.sh shardgate:musl-malloc
#   bash config/docker/bench-image.sh [ROUNDS]
#
# Not run by CI (it measures; it asserts nothing).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
host_bin=target/release/shardgate
work=$(mktemp -d)
pids=()
containers=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

config() { # base port -> deployment file
  local b=$1
  cat <<TOML
version = 1
[meta]
id = 1
listen = "127.0.0.1:$((b + 1))"
data_dir = "/data/meta"
members = [{ id = 1, addr = "http://127.0.0.1:$((b + 1))" }]
[node]
listen = "127.0.0.1:$((b + 2))"
memory_limit = "256MiB"
[proxy]
listen = "127.0.0.1:$((b + 3))"
meta = ["http://127.0.0.1:$((b + 1))"]
TOML
}

declare -A base pid_of
base[host]=17100; base[image]=17200; base[musl]=17300

start() { # name
  local n=$1 b=${base[$1]}
  mkdir -p "$work/$n"
  config "$b" | sed "s#/data/meta#$work/$n/meta#" >"$work/$n/host.toml"
  config "$b" >"$work/$n/container.toml"
  chmod -R a+rwX "$work"
  case $n in
    host)
      "$host_bin" serve --config "$work/host/host.toml" 2>"$work/host/log" &
      pid_of[host]=$!; pids+=("$!") ;;
    image|musl)
      local tag=shardgate:latest; [ "$n" = musl ] && tag=shardgate:musl-malloc
      local c; c=$(docker run -d --network host -v "$work/$n/container.toml:/etc/shardgate/bench.toml:ro" \
        -e SHARDGATE_CONFIG=/etc/shardgate/bench.toml "$tag")
      containers+=("$c")
      pid_of[$n]=$(docker inspect -f '{{.State.Pid}}' "$c") ;;
  esac
  local meta="http://127.0.0.1:$((b + 1))"
  for _ in $(seq 1 100); do curl -sf "$meta/readyz" >/dev/null && break; sleep 0.1; done
  SHARDGATE_META=$meta "$host_bin" ctl nodes add n1 "http://127.0.0.1:$((b + 2))" >/dev/null
  SHARDGATE_META=$meta "$host_bin" ctl strategy upload rendezvous >/dev/null 2>&1
  SHARDGATE_META=$meta "$host_bin" ctl strategy activate rendezvous --wait --proxy "http://127.0.0.1:$((b + 3))" >/dev/null
  head -c 100 /dev/zero | tr '\0' x >"$work/value"
  curl -sf -X PUT --data-binary @"$work/value" "http://127.0.0.1:$((b + 3))/v1/keys/bench-0" >/dev/null
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # name target(node|proxy) -> "req/s us/req"
  local n=$1 b=${base[$1]} port
  if [ "$2" = node ]; then port=$((b + 2)); else port=$((b + 3)); fi
  local t0; t0=$(ticks "${pid_of[$n]}")
  local out; out=$(wrk -t2 -c64 -d5s "http://127.0.0.1:$port/v1/keys/bench-0")
  local t1; t1=$(ticks "${pid_of[$n]}")
  local rps req
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  req=$(echo "$out" | awk '/requests in/ {print $1}')
  local hz; hz=$(getconf CLK_TCK)
  echo "$rps $(awk -v t=$((t1 - t0)) -v r="$req" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')"
}

for n in host image musl; do start "$n"; done
echo "| round | build | node req/s | node us/req (server) | proxy req/s | proxy us/req (server) |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for n in host image musl; do
    read -r nr nc < <(measure "$n" node)
    read -r pr pc < <(measure "$n" proxy)
    echo "| $r | $n | $nr | $nc | $pr | $pc |"
  done
done
