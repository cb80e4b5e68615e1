#!/usr/bin/env bash
# Alternate two hats binaries on fresh clusters, to compare them on a
# machine whose speed drifts: round by round, A then B, each run on a
# fresh 3-node cluster (scripts/bench-cluster.sh), the summary lines of
# each appended to OUT.
#
#   scripts/ab-cluster.sh OUT BIN_A BIN_B ROUNDS "hats bench ARGS"...
set -u
out=$1 a=$2 b=$3 rounds=$4
shift 4
cd "$(dirname "$0")/.."
for r in $(seq 1 "$rounds"); do
	for bin in "$a" "$b"; do
		echo "## round $r bin $bin" >>"$out"
		HATS_BIN=$bin scripts/bench-cluster.sh "$@" 2>&1 |
			grep -E "^(throughput|latency|longest gap|# node|# early|# n1 data|# hats bench CPU|operations)" >>"$out"
	done
done
echo done >>"$out"
