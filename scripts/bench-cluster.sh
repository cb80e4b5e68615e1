#!/usr/bin/env bash
# Start a fresh 3-node HATS cluster on 127.0.0.1 (real processes, fsync on,
# production Raft timing), run `hats bench` with each argument set given on
# the command line against it, and stop the cluster. Each run is preceded
# by a header with the time and load average, and followed by the CPU
# seconds each node process used during it (utime+stime from /proc).
#
#   scripts/bench-cluster.sh "--clients 1 --duration 10s" "--clients 64 --duration 10s --stream"
#
# With KILL_LEADER_AFTER=S, S seconds into each run's load phase (after
# hats bench has registered and funded its traders) the leader process
# gets SIGKILL; it is restarted on its data dir after the run (the gap
# shows in hats bench's "longest gap" line). With TRANSFER_LEADER_AFTER=S
# the leader instead hands leadership over (hats cluster
# transfer-leadership) S seconds into each run's load phase.
#
# Environment: KEEP_DATA=1 (leave the data dirs), HATS_BIN (default: build ./hats), NODE_ARGS (extra flags
# for every node), PORT_BASE (default 7100: HTTP 7101-3, Raft 7201-3,
# gossip 7301-3), PPROF_BASE (serve Go profiles on PPROF_BASE+1..3), TLS=1
# (hats cert makes a CA, node and operator certificates and a gossip key;
# the nodes serve TLS and every client command uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HATS_BIN:-}
if [[ -z "$BIN" ]]; then
	go build -o tmp/hats-bench-bin . && BIN=tmp/hats-bench-bin
fi
BASE=${PORT_BASE:-7100}
DIR=$(mktemp -d /tmp/hats-bench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n "${KEEP_LOGS:-}" ]]; then cp "$DIR"/n*.log "$KEEP_LOGS"/ 2>/dev/null; fi
	if [[ -n "${KEEP_DATA:-}" ]]; then echo "# data dirs kept in $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# Plaintext, or TLS with files hats cert makes (one certificate per node).
CLI_SEC=(--insecure) ADMIN_SEC=(--insecure) CURL_SEC=() SCHEME=http
if [[ -n "${TLS:-}" ]]; then
	C="$DIR/certs"
	"$BIN" cert ca --dir "$C" >/dev/null
	for i in 1 2 3; do "$BIN" cert node --dir "$C" --name "n$i" --host 127.0.0.1 >/dev/null; done
	"$BIN" cert client --dir "$C" --name operator >/dev/null
	"$BIN" cert gossip-key --dir "$C" >/dev/null
	CLI_SEC=(--tls-ca "$C/ca.crt") ADMIN_SEC=(--tls-ca "$C/ca.crt" --tls-cert "$C/operator.crt" --tls-key "$C/operator.key")
	CURL_SEC=(--cacert "$C/ca.crt") SCHEME=https
fi
node_sec() { # node_sec I: node nI's plaintext or TLS flags
	if [[ -n "${TLS:-}" ]]; then
		echo --tls-cert "$C/n$1.crt" --tls-key "$C/n$1.key" --tls-ca "$C/ca.crt" --gossip-key-file "$C/gossip.key"
	else
		echo --insecure
	fi
}

cpu() { # utime+stime of a pid, in clock ticks
	awk '{print $14+$15}' "/proc/$1/stat"
}

wait_load() { # until hats bench has registered its traders and the load starts
	for _ in $(seq 1 1200); do
		grep -q "clients for" "$DIR/bench.out" 2>/dev/null && break
		sleep 0.05
	done
}

start_node() { # start_node I: (re)start node nI in the background
	local i=$1 join=()
	[[ $i -gt 1 ]] && join=(--join "127.0.0.1:$((BASE + 1))")
	[[ -n "${PPROF_BASE:-}" ]] && join+=(--pprof-addr "127.0.0.1:$((PPROF_BASE + i))")
	"$BIN" node --id "n$i" --data-dir "$DIR/n$i" --raft-addr "127.0.0.1:$((BASE + 100 + i))" \
		--http-addr "127.0.0.1:$((BASE + i))" --gossip-addr "127.0.0.1:$((BASE + 200 + i))" \
		$(node_sec "$i") ${NODE_ARGS:-} "${join[@]}" >>"$DIR/n$i.log" 2>&1 &
	PIDS[$((i - 1))]=$!
	# wait for it to serve
	for _ in $(seq 1 200); do
		curl -fs "${CURL_SEC[@]}" "$SCHEME://127.0.0.1:$((BASE + i))/v1/status" >/dev/null 2>&1 && break
		sleep 0.05
	done
}
for i in 1 2 3; do start_node "$i"; done
CLUSTER="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
# wait until all three are voters with a leader
for _ in $(seq 1 200); do
	"$BIN" cluster status --cluster "$CLUSTER" "${CLI_SEC[@]}" 2>/dev/null | grep -c voter | grep -q 3 && break
	sleep 0.1
done
echo "# cluster: 3 hats node processes on 127.0.0.1 (${NODE_ARGS:-default flags}${TLS:+, TLS}), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted changes')"
TCK=$(getconf CLK_TCK)
for args in "$@"; do
	echo
	echo "================================================================"
	echo "# $(date -u +%FT%TZ)  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "\$ hats bench $args"
	before=()
	before_r=() before_w=()
	for p in "${PIDS[@]}"; do
		before+=("$(cpu "$p")")
		before_r+=("$(awk '/^syscr/{print $2}' "/proc/$p/io")")
		before_w+=("$(awk '/^syscw/{print $2}' "/proc/$p/io")")
	done
	killer=
	if [[ -n "${TRANSFER_LEADER_AFTER:-}" ]]; then
		(
			wait_load
			sleep "$TRANSFER_LEADER_AFTER"
			echo "# $(date -u +%T.%N | cut -c1-12) $("$BIN" cluster transfer-leadership --cluster "$CLUSTER" "${ADMIN_SEC[@]}" 2>&1)" >&2
		) &
		killer=$!
	elif [[ -n "${KILL_LEADER_AFTER:-}" ]]; then
		(
			wait_load
			sleep "$KILL_LEADER_AFTER"
			# the node that says it leads in the highest term
			best=0 bestterm=0
			for i in 1 2 3; do
				st=$(curl -fs -m 3 "${CURL_SEC[@]}" "$SCHEME://127.0.0.1:$((BASE + i))/v1/status" 2>/dev/null) || continue
				term=$(grep -o '"term":[0-9]*' <<<"$st" | head -1 | cut -d: -f2)
				if grep -q '"state":"Leader"' <<<"$st" && [[ ${term:-0} -gt $bestterm ]]; then
					best=$i bestterm=$term
				fi
			done
			if [[ $best -gt 0 ]]; then
				echo "# $(date -u +%T.%N | cut -c1-12) SIGKILL leader n$best (term $bestterm)" >&2
				kill -KILL "${PIDS[$((best - 1))]}"
				echo "$best" >"$DIR/killed"
			fi
		) &
		killer=$!
	fi
	# shellcheck disable=SC2086
	/usr/bin/time -o "$DIR/bench.time" -f "# hats bench CPU s: %U user + %S sys" \
		"$BIN" bench --cluster "$CLUSTER" "${CLI_SEC[@]}" $args >"$DIR/bench.out" 2>&1 || echo "# hats bench exited with status $?" >>"$DIR/bench.out"
	cat "$DIR/bench.out" "$DIR/bench.time"
	rm -f "$DIR/bench.out"
	if [[ -n "$killer" ]]; then
		wait "$killer" || true
		if [[ -f "$DIR/killed" ]]; then
			k=$(cat "$DIR/killed")
			rm -f "$DIR/killed"
			wait "${PIDS[$((k - 1))]}" 2>/dev/null || true
			start_node "$k"
			echo "# restarted n$k"
			continue
		fi
	fi
	line="# node CPU s during the run:"
	for k in 0 1 2; do
		line+=" n$((k + 1)) $(awk -v a="${before[$k]}" -v b="$(cpu "${PIDS[$k]}")" -v t="$TCK" 'BEGIN{printf "%.2f", (b-a)/t}')"
	done
	echo "$line"
	line="# node read/write system calls during the run:"
	for k in 0 1 2; do
		line+=" n$((k + 1)) $(awk -v r="${before_r[$k]}" -v w="${before_w[$k]}" '/^syscr/{cr=$2} /^syscw/{cw=$2} END{printf "%d/%d", cr-r, cw-w}' "/proc/${PIDS[$k]}/io")"
	done
	echo "$line"
	line="# node peak RSS MB so far:"
	for k in 0 1 2; do
		line+=" n$((k + 1)) $(awk '/^VmHWM/{printf "%d", $2/1024}' "/proc/${PIDS[$k]}/status" 2>/dev/null)"
	done
	echo "$line"
	line="# early appends sent/accepted/answering Raft's request so far:"
	for k in 0 1 2; do
		st=$(curl -fs -m 3 "${CURL_SEC[@]}" "$SCHEME://127.0.0.1:$((BASE + k + 1))/v1/status" 2>/dev/null || true)
		line+=" n$((k + 1))"
		sep=" "
		for f in early_appends_sent early_appends_accepted early_answers; do
			# Each count is left out of the JSON while it is 0.
			v=$(grep -o "\"$f\":[0-9]*" <<<"$st" | cut -d: -f2 || true)
			line+="$sep${v:-0}"
			sep=/
		done
	done
	echo "$line"
	echo "# n1 data dir: $(du -sh "$DIR/n1/state.db" | cut -f1) state.db, $(du -sh "$DIR/n1/snapshots" 2>/dev/null | cut -f1) snapshots, $(du -sh "$DIR/n1/raft-wal" "$DIR/n1/raft.db" 2>/dev/null | cut -f1 | head -1) Raft log"
	echo "# $(date -u +%FT%TZ)  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
