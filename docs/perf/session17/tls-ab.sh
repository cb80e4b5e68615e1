#!/usr/bin/env bash
# TLS against plaintext on the same build: alternating fresh 3-node
# clusters (scripts/bench-cluster.sh, TLS=1 for the TLS ones), ROUNDS
# pairs, each running the given hats bench argument sets.
#   docs/perf/session17/tls-ab.sh OUT ROUNDS "ARGS"...
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=$1 rounds=$2
shift 2
go build -o tmp/hats-ab-tls .
: >"$out"
for r in $(seq 1 "$rounds"); do
	for mode in plain tls; do
		echo "######## round $r: $mode" >>"$out"
		if [[ $mode == tls ]]; then
			TLS=1 HATS_BIN=tmp/hats-ab-tls scripts/bench-cluster.sh "$@" >>"$out" 2>&1
		else
			HATS_BIN=tmp/hats-ab-tls scripts/bench-cluster.sh "$@" >>"$out" 2>&1
		fi
	done
done
