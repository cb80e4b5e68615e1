#!/usr/bin/env bash
# A rolling upgrade of a 3-node HATS cluster on 127.0.0.1 (real processes)
# from OLD_BIN to NEW_BIN while hats bench trades against it: followers
# first, the leader last, each stopped with SIGTERM and started again on
# its data dir with the same flags. It checks that the cluster keeps the
# old state-machine rules while any node runs the old release, raises
# them once the last node is upgraded (a stop-limit order beyond the
# collar, accepted before, is then rejected), that the bench ends with no
# errors and its conservation check passing, and that every node ends
# with the same state hash. Exit status 0 when all of that holds.
#
#   OLD_BIN=tmp/hats-old NEW_BIN=tmp/hats-new scripts/rolling-upgrade.sh
#
# NEW_BIN defaults to a build of this tree. OLD_BIN is any earlier hats
# binary, e.g. one built from an older commit with
#   git worktree add /tmp/old <commit> && (cd /tmp/old && go build -o ../hats-old .)
# PORT_BASE (default 7400: HTTP 7401-3, Raft 7501-3), KEEP_DATA=1 keeps
# the data dirs and logs. Every loop is bounded; traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD_BIN:?set OLD_BIN to the hats binary to upgrade from}
NEW=${NEW_BIN:-}
if [[ -z "$NEW" ]]; then
	go build -o tmp/hats-upgrade-new . && NEW=tmp/hats-upgrade-new
fi
BASE=${PORT_BASE:-7400}
DIR=$(mktemp -d /tmp/hats-upgrade.XXXXXX)
PIDS=(0 0 0)
cleanup() {
	for p in "${PIDS[@]}"; do [[ $p -gt 0 ]] && kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do [[ $p -gt 0 ]] && wait "$p" 2>/dev/null || true; done
	if [[ -n "${KEEP_DATA:-}" ]]; then echo "# data dirs and logs kept in $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
CLUSTER="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
export HATS_CLUSTER=$CLUSTER HATS_INSECURE=1 HATS_SESSION=$DIR/session.json
say() { echo "# $(date -u +%T) $*"; }
fail() {
	say "FAIL: $*"
	tail -n 20 "$DIR"/n*.log >&2 || true
	exit 1
}
status() { curl -fs -m 2 "http://127.0.0.1:$((BASE + $1))/v1/status${2:-}"; }

start_node() { # start_node BIN I
	local bin=$1 i=$2 join=()
	[[ $i -gt 1 ]] && join=(--join "127.0.0.1:$((BASE + 1))")
	"$bin" node --id "n$i" --data-dir "$DIR/n$i" --raft-addr "127.0.0.1:$((BASE + 100 + i))" \
		--http-addr "127.0.0.1:$((BASE + i))" --insecure "${join[@]}" >>"$DIR/n$i.log" 2>&1 &
	PIDS[$((i - 1))]=$!
	for _ in $(seq 1 200); do
		status "$i" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "n$i did not serve"
}
stop_node() { # stop_node I: SIGTERM and wait (a leader hands over first)
	local p=${PIDS[$(($1 - 1))]}
	kill -TERM "$p"
	wait "$p" 2>/dev/null || true
	PIDS[$(($1 - 1))]=0
}
leader() { # the ID number of the node that leads
	for i in 1 2 3; do
		status "$i" 2>/dev/null | grep -q '"state":"Leader"' && { echo "$i"; return 0; }
	done
	echo 0
}
caught_up() { # caught_up I: node I follows a leader and has applied what it knows is committed
	local st
	st=$(status "$1" 2>/dev/null) || return 1
	grep -q '"leader":"n' <<<"$st" || return 1
	local applied commit
	applied=$(grep -o '"applied_index":[0-9]*' <<<"$st" | cut -d: -f2)
	commit=$(grep -o '"commit_index":[0-9]*' <<<"$st" | cut -d: -f2)
	[[ -n "$applied" && "$applied" -ge $((commit - 50)) ]]
}
rules_of() { status "$1" 2>/dev/null | grep -o '"rules":[0-9]*' | cut -d: -f2 || true; }

say "old: $("$OLD" version | head -1)  new: $("$NEW" version | head -1), commit $(git rev-parse --short HEAD)"
for i in 1 2 3; do start_node "$OLD" "$i"; done
for _ in $(seq 1 200); do
	"$NEW" cluster status 2>/dev/null | grep -c voter | grep -q 3 && break
	sleep 0.1
done
say "3 nodes on the old release; leader n$(leader)"

echo "upgrade-pass-1" | "$NEW" trade register upgrader --password-stdin >/dev/null
echo "upgrade-pass-1" | "$NEW" trade login upgrader --password-stdin >/dev/null
"$NEW" trade deposit 100000.00 >/dev/null
WIDE=(trade buy AAPL 1 --stop 250.00 --limit 300.00)
"$NEW" "${WIDE[@]}" --json >"$DIR/wide-old.json" || fail "a stop-limit beyond the collar on the old release"
grep -q '"status": "open"' "$DIR/wide-old.json" || fail "stop-limit on the old release: $(cat "$DIR/wide-old.json")"
say "stop-limit buy AAPL stop 250.00 limit 300.00 on the old release: open"

"$NEW" bench --clients 8 --duration 45s --rate 400 --stream >"$DIR/bench.out" 2>&1 &
BENCH=$!
for _ in $(seq 1 600); do grep -q "clients for" "$DIR/bench.out" 2>/dev/null && break; sleep 0.05; done
say "hats bench: 8 clients at 400 operations/s for 45 s"

L=$(leader)
ORDER=()
for i in 1 2 3; do [[ $i -ne $L ]] && ORDER+=("$i"); done
ORDER+=("$L")
for i in "${ORDER[@]}"; do
	sleep 3 # let the bench trade between upgrades
	stop_node "$i"
	start_node "$NEW" "$i"
	for _ in $(seq 1 300); do caught_up "$i" && break; sleep 0.1; done
	caught_up "$i" || fail "n$i did not catch up after its upgrade"
	say "n$i upgraded; leader n$(leader); rules: n1=$(rules_of 1) n2=$(rules_of 2) n3=$(rules_of 3)"
	if [[ $i != "${ORDER[2]}" ]]; then
		for j in 1 2 3; do
			r=$(rules_of "$j")
			[[ -z "$r" || "$r" == 1 ]] || fail "n$j at rules $r while a node still runs the old release"
		done
	fi
done
for _ in $(seq 1 300); do
	[[ "$(rules_of 1)$(rules_of 2)$(rules_of 3)" == 222 ]] && break
	sleep 0.1
done
[[ "$(rules_of 1)$(rules_of 2)$(rules_of 3)" == 222 ]] || fail "rules not raised on every node: $(rules_of 1) $(rules_of 2) $(rules_of 3)"
say "every node at rules 2"
if out=$("$NEW" "${WIDE[@]}" 2>&1); then
	fail "a stop-limit beyond the collar accepted after the upgrade: $out"
fi
grep -q beyond_collar <<<"$out" || fail "stop-limit after the upgrade: $out"
say "the same stop-limit after the upgrade: rejected (beyond_collar)"
"$NEW" trade orders --json | grep -q '"status": "open"' || fail "the stop-limit placed before the upgrade is gone"

wait "$BENCH" || fail "hats bench failed: $(tail -n 30 "$DIR/bench.out")"
sed -n '/^operations/,$p' "$DIR/bench.out" | sed 's/^/#   /'
grep -qE "conservation +ok" "$DIR/bench.out" || fail "bench conservation check"

hash_of() { # hash_of I: node I's state hash and the index it is of
	local st
	st=$(status "$1" "?fresh=true" 2>/dev/null) || return 0
	echo "$(grep -o '"state_hash":"[0-9a-f]*"' <<<"$st") $(grep -o '"hash_index":[0-9]*' <<<"$st")"
}
same=
for _ in $(seq 1 100); do
	[[ "$(for i in 1 2 3; do hash_of "$i"; done | sort -u | grep -c hash_index)" == 1 ]] && { same=1; break; }
	sleep 0.1
done
[[ -n "$same" ]] || fail "nodes differ: $(for i in 1 2 3; do hash_of "$i"; done)"
say "PASS: every node holds the same state ($(hash_of 1))"
