#!/usr/bin/env bash
# Runs the node benchmark once: installs its load generator (wrk) and the
# memory reference (memcached) from Debian if missing, then
# `cargo bench -p shardgate-node --bench node`. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../../.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v memcached >/dev/null || missing+=(memcached)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
exec cargo bench -p shardgate-node --bench node
