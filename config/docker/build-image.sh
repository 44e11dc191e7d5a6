#!/usr/bin/env bash
# Builds the shardgate container image from scratch (see ../../Dockerfile):
#
#   bash config/docker/build-image.sh [TAG]      # default shardgate:latest
#
# SHARDGATE_FEATURES=musl-system-allocator builds it with musl's own malloc
# instead of mimalloc (for config/docker/bench-image.sh only).
# Needs the x86_64-unknown-linux-musl target (rustup target add, done here)
# and musl-gcc (Debian: musl-tools) for the C parts (mimalloc, ring). As
# root it installs musl-tools when missing. Prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-shardgate:latest}
target=x86_64-unknown-linux-musl
ctx=target/docker-context

step() { printf '[build-image] %s\n' "$*" >&2; }
t0=$(date +%s)

if ! command -v musl-gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing musl-tools (musl-gcc)"
    apt-get install -y -qq musl-tools >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
  else
    echo "build-image: musl-gcc not found: install musl-tools (apt-get install musl-tools)" >&2
    exit 2
  fi
fi
want=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
rustup target add --toolchain "$want" "$target" >/dev/null 2>&1 || rustup target add "$target"

features=${SHARDGATE_FEATURES:-}
step "cargo build --release --target $target -p shardgate ${features:+--features $features }(static, stripped)"
CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --target "$target" -p shardgate ${features:+--features "$features"}
t1=$(date +%s)

bin="target/$target/release/shardgate"
if [ ! -x "$bin" ]; then
  echo "build-image: $bin was not built" >&2; exit 1
fi
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "build-image: $certs not found: install ca-certificates" >&2; exit 2; }

rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/data"
cp Dockerfile "$ctx/Dockerfile"
cp "$bin" "$ctx/rootfs/shardgate"
cp "$certs" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nshardgate:x:10001:10001:shardgate:/data:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nshardgate:x:10001:\n' >"$ctx/rootfs/etc/group"

step "docker build -t $tag"
docker build -q -t "$tag" "$ctx" >/dev/null
t2=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$tag")
step "$tag: $((size / 1000000)) MB; compile $((t1 - t0)) s, image $((t2 - t1)) s"
echo "$tag"
