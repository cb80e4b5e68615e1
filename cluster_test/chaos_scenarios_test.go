package cluster_test

// Chaos scenarios. TestChaos_Scenarios runs every scenario once (the short
// campaign, part of `go test ./...`); TestChaos_LongCampaign runs a
// randomized campaign for HATS_CHAOS_DURATION and writes a report to
// HATS_CHAOS_REPORT. Each scenario logs its schedule, seed and result;
// HATS_CHAOS_SEED=<seed> replays a campaign's choices (which node, which
// fault, how long; thread timing is not replayable).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

// chaosScenario is one fault schedule.
type chaosScenario struct {
	name string
	opts chaosOpts
	run  func(e *chaosEnv)
}

// electionWait bounds how long a majority may take to elect after a fault.
const electionWait = 8 * time.Second

// expectLeader waits for the given nodes to agree on a leader among them;
// failing to is a liveness anomaly of the partitioned cluster.
func (e *chaosEnv) expectLeader(among []string, why string) string {
	id, err := e.awaitLeader(electionWait, among...)
	if err != nil {
		e.anomaly("liveness", "%s: %v", why, err)
		return ""
	}
	e.event("note", "%s: %s leads", why, id)
	return id
}

// expectWrite makes one acknowledged write through the given nodes only.
func (e *chaosEnv) expectWrite(why string, via ...string) {
	var nodes []*TNode
	for _, id := range via {
		nodes = append(nodes, e.node(id))
	}
	cl := e.client("probe-"+strings.Join(via, "-"), nodes...)
	cl.SetToken(e.probe.Token())
	start := time.Now()
	_, err := chaosLiveness(electionWait, func(ctx context.Context) error {
		_, err := cl.Deposit(ctx, "0.01", "")
		return err
	})
	if err != nil {
		e.anomaly("liveness", "%s: %v", why, err)
		return
	}
	e.event("note", "%s: write acknowledged via %v after %v", why, via, time.Since(start).Round(time.Millisecond))
}

func pick[T any](rng *rand.Rand, list []T) T { return list[rng.IntN(len(list))] }

var chaosScenarios = []chaosScenario{
	{name: "leader-isolated", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		e.net.Isolate(l)
		e.event("partition", "isolate leader %s from %v", l, e.others(l))
		e.expectLeader(e.others(l), "majority elects while the old leader is isolated")
		e.sleep(e.jitter(2 * time.Second))
	}},
	{name: "minority-majority-split", opts: chaosOpts{Nodes: 5}, run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		others := e.others(l)
		e.rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		minority := []string{l, others[0]}
		majority := others[1:]
		e.net.Partition(minority, majority)
		e.event("partition", "minority %v (with the leader) | majority %v", minority, majority)
		nl := e.expectLeader(majority, "majority elects")
		e.sleep(e.jitter(1500 * time.Millisecond))
		e.heal()
		e.sleep(e.jitter(time.Second))
		// Second split: the leader in the majority this time.
		if nl == "" {
			nl = e.leader()
		}
		rest := e.others(nl)
		e.rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		minority, majority = rest[:2], append([]string{nl}, rest[2:]...)
		e.net.Partition(minority, majority)
		e.event("partition", "minority %v | majority %v (with the leader)", minority, majority)
		e.expectWrite("majority with its leader keeps committing", majority...)
		e.sleep(e.jitter(1500 * time.Millisecond))
	}},
	{name: "bridge", opts: chaosOpts{Nodes: 5}, run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		rest := e.others(l)
		e.rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		left, bridge, right := []string{l, rest[0]}, rest[1], rest[2:]
		e.net.Bridge(left, right, bridge)
		e.event("partition", "bridge: %v | %s | %v (%s sees both halves)", left, bridge, right, bridge)
		// The bridge and either half form a majority: some leader must
		// commit (clients reach every node).
		e.expectWrite("a majority through the bridge commits", e.others()...)
		e.sleep(e.jitter(2500 * time.Millisecond))
	}},
	{name: "one-way-cut", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		for _, o := range e.others(l) {
			e.net.OneWay(l, o)
		}
		e.event("one-way", "%s's messages to %v are lost; theirs still reach it", l, e.others(l))
		nl := e.expectLeader(e.others(l), "followers that stopped hearing the leader elect")
		e.sleep(e.jitter(1500 * time.Millisecond))
		e.heal()
		e.sleep(e.jitter(time.Second))
		if nl == "" {
			nl = e.leader()
		}
		for _, o := range e.others(nl) {
			e.net.OneWay(o, nl)
		}
		e.event("one-way", "%v's messages to leader %s are lost; the leader's still reach them", e.others(nl), nl)
		e.sleep(e.jitter(2 * time.Second))
	}},
	{name: "kill-leader", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		e.kill(l)
		e.expectLeader(e.others(l), "survivors elect after the leader crashed")
		e.sleep(e.jitter(1500 * time.Millisecond))
		e.restart(l)
		e.sleep(e.jitter(time.Second))
	}},
	{name: "kill-follower", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		f := pick(e.rng, e.others(l))
		e.kill(f)
		e.expectWrite("leader and the other follower keep committing", e.others(f)...)
		e.sleep(e.jitter(1500 * time.Millisecond))
		e.restart(f)
		e.sleep(e.jitter(time.Second))
	}},
	{name: "kill-majority", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		f := pick(e.rng, e.others(l))
		e.kill(l)
		e.kill(f)
		e.event("note", "no quorum: writes must fail or stay unknown, never be acknowledged")
		e.sleep(e.jitter(2 * time.Second))
		e.restart(f)
		e.restart(l)
		e.expectLeader(nil, "restarted majority elects")
		e.sleep(e.jitter(time.Second))
	}},
	{name: "pause-leader", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		l := e.leader()
		// Election timeout is 200ms in these clusters: freeze well beyond it.
		e.pause(l, e.jitter(1500*time.Millisecond))
		e.expectLeader(nil, "cluster settles after the frozen leader resumes")
		e.sleep(e.jitter(time.Second))
	}},
	{name: "snapshot-install", opts: chaosOpts{Tune: func(cfg *node.Config) {
		cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 64, 32, 150*time.Millisecond
		cfg.RaftLogLevel = "info" // to count "Installed remote snapshot"
	}}, run: chaosSnapshotScenario},
	{name: "remove-readd", run: chaosRemoveReaddScenario},
	{name: "client-failover-mid-request", run: chaosClientFailoverScenario},
	{name: "lossy-slow-network", run: func(e *chaosEnv) {
		e.sleep(e.jitter(time.Second))
		e.net.Delay(20*time.Millisecond, 30*time.Millisecond)
		e.net.Drop(0.01)
		e.event("delay-drop", "every node link: +20–50ms per chunk, 1%% of chunks reset their connection")
		e.sleep(e.jitter(3 * time.Second))
		e.net.Delay(0, 0)
		e.net.Drop(0)
		e.event("note", "delay and drop off")
		e.expectWrite("cluster commits once the network is clean", e.others()...)
	}},
	{name: "raft-695-heal-under-load", opts: chaosOpts{Pinned: true, Tune: func(cfg *node.Config) {
		// A leader keeps leading for up to twice the lease after losing
		// contact; with lease = heartbeat timeout the old leader often
		// still leads when the majority's new leader reaches it.
		cfg.LeaderLeaseTimeout = cfg.HeartbeatTimeout
	}}, run: func(e *chaosEnv) { chaos695Rounds(e, 6) }},
}

// chaosSnapshotScenario: a follower falls far behind while isolated and
// is caught up by a snapshot; then again, slowed down, and killed while
// the snapshot streams to it.
func chaosSnapshotScenario(e *chaosEnv) {
	e.sleep(e.jitter(500 * time.Millisecond))
	l := e.leader()
	f := pick(e.rng, e.others(l))
	for round := 1; round <= 2; round++ {
		l = e.leader()
		if l == f { // leadership moved to f meanwhile: take another follower
			f = pick(e.rng, e.others(l))
		}
		e.net.Isolate(f)
		e.event("partition", "round %d: isolate follower %s while the others commit and compact", round, f)
		// The follower's log, not its applied index: entries it holds but
		// has not applied yet need no snapshot.
		fIdx := e.node(f).Node.Raft().LastIndex()
		err := pollUntil(15*time.Second, func() error {
			e.mu.Lock()
			defer e.mu.Unlock()
			st := e.node(l).Node.Raft().Stats()
			snap, _ := strconv.ParseUint(st["last_snapshot_index"], 10, 64)
			// Past what the leader keeps behind a snapshot (32 trailing
			// entries) plus one request's worth of entries (256) that may
			// be on its way to the follower when it was cut off and reach
			// it at the heal.
			if snap <= fIdx+64+256 {
				return fmt.Errorf("leader snapshot at %d, follower at %d", snap, fIdx)
			}
			return nil
		})
		if err != nil {
			e.event("note", "leader did not compact past the follower: %v", err)
		} else {
			e.event("note", "leader compacted its log past %s's index %d", f, fIdx)
		}
		before := e.logs.mark(f, "Installed remote snapshot")
		if round == 1 {
			e.heal()
			err := pollUntil(15*time.Second, func() error {
				if e.logs.mark(f, "Installed remote snapshot") == before {
					return fmt.Errorf("no snapshot installed on %s yet (its log ends at %d)", f, e.node(f).Node.Raft().LastIndex())
				}
				return nil
			})
			if err != nil {
				e.anomaly("snapshot", "%v; the leader's snapshot is at %s", err, e.node(l).Node.Raft().Stats()["last_snapshot_index"])
			} else {
				e.event("note", "%s installed a snapshot from %s", f, l)
			}
			e.sleep(e.jitter(time.Second))
			continue
		}
		// Round 2: slow the leader's link to f, heal, and crash f once part
		// of the snapshot has gone through.
		e.net.LinkRate(l, f, 64<<10)
		sent := e.net.LinkBytes(l, f)
		e.net.HealCuts()
		e.event("slow-link", "heal; %s→%s limited to 64 KiB/s", l, f)
		err = pollUntil(10*time.Second, func() error {
			if got := e.net.LinkBytes(l, f) - sent; got < 96<<10 {
				return fmt.Errorf("%d bytes sent to %s since the heal", got, f)
			}
			return nil
		})
		if err != nil {
			e.event("note", "snapshot transfer did not start: %v", err)
		}
		e.kill(f)
		e.event("note", "%s killed with %d KiB streamed to it (installs it logged: %d; failed installs the leader logged: %d)",
			f, (e.net.LinkBytes(l, f)-sent)>>10, e.logs.mark(f, "Installed remote snapshot")-before, e.logs.mark(l, "failed to install snapshot"))
		e.net.LinkRate(l, f, 0)
		e.sleep(e.jitter(500 * time.Millisecond))
		e.restart(f)
		err = pollUntil(20*time.Second, func() error {
			e.mu.Lock()
			defer e.mu.Unlock()
			if got, want := e.node(f).Node.FSM().AppliedIndex(), e.node(l).Node.FSM().AppliedIndex(); got+5 < want {
				return fmt.Errorf("%s at %d, leader at %d", f, got, want)
			}
			return nil
		})
		if err != nil {
			e.event("note", "%s still catching up: %v", f, err)
		} else {
			e.event("note", "%s caught up after the interrupted install", f)
		}
	}
}

// chaosRemoveReaddScenario removes a follower under load, crashes it, and
// adds it back (with its old data dir or a wiped one).
func chaosRemoveReaddScenario(e *chaosEnv) {
	ctx := context.Background()
	e.sleep(e.jitter(time.Second))
	l := e.leader()
	f := pick(e.rng, e.others(l))
	admin := e.client("admin", e.node(l))
	if err := admin.Remove(ctx, f); err != nil {
		e.t.Fatalf("remove %s: %v", f, err)
	}
	e.event("remove", "%s removed from the cluster", f)
	e.mu.Lock()
	e.gone[f] = true
	e.mu.Unlock()
	e.kill(f)
	e.expectWrite("two-node cluster commits", e.others()...)
	e.sleep(e.jitter(1500 * time.Millisecond))
	tn := e.node(f)
	wipe := e.rng.IntN(2) == 0
	if wipe {
		if err := os.RemoveAll(tn.Dir); err != nil {
			e.t.Fatal(err)
		}
	}
	e.event("re-add", "%s joins again (data dir wiped: %v)", f, wipe)
	e.mu.Lock()
	err := e.c.start(tn, e.c.joinAddrs(tn))
	delete(e.gone, f)
	e.mu.Unlock()
	if err != nil {
		e.t.Fatalf("re-add %s: %v", f, err)
	}
	err = pollUntil(15*time.Second, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, s := range e.node(l).Node.Raft().GetConfiguration().Configuration().Servers {
			if string(s.ID) == f {
				return nil
			}
		}
		return fmt.Errorf("%s not in the configuration", f)
	})
	if err != nil {
		e.anomaly("membership", "re-add: %v", err)
	} else {
		e.event("note", "%s is a member again", f)
	}
	e.sleep(e.jitter(time.Second))
}

// chaosClientFailoverScenario: a client's request is in flight to a node
// (its link slowed) when that node crashes; the client retries the same
// idempotency key elsewhere and must get a definite answer. Once with a
// follower, once with the leader.
func chaosClientFailoverScenario(e *chaosEnv) {
	ctx := context.Background()
	acct := e.bankAccts[0]
	client := e.hist.newClient()
	for round, role := range []string{"follower", "leader"} {
		e.sleep(e.jitter(700 * time.Millisecond))
		l := e.leader()
		victim := l
		if role == "follower" {
			victim = pick(e.rng, e.others(l))
		}
		name := fmt.Sprintf("retrier%d", round)
		nodes := []*TNode{e.node(victim)}
		for _, id := range e.others(victim) {
			nodes = append(nodes, e.node(id))
		}
		cl, err := transport.NewClient(transport.ClientConfig{Nodes: e.c.Addrs(nodes...), Timeout: 2 * time.Second, Deadline: 15 * time.Second,
			HTTPClient: e.net.HTTPClient(name, 2*time.Second), TLS: e.net.tls})
		if err != nil {
			e.t.Fatal(err)
		}
		e.login(cl, "bank1")
		if err := cl.SetPreferred(e.node(victim).HTTPAddr); err != nil {
			e.t.Fatal(err)
		}
		delay := 200*time.Millisecond + time.Duration(e.rng.Int64N(int64(300*time.Millisecond)))
		e.net.LinkDelay(name, victim, delay)
		op := chaosOp{Client: client, Worker: name, Account: acct, Kind: opDeposit, Amount: e.wl.uniqueAmount(acct, 1000), Key: transport.NewIdempotencyKey()}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			op.Call = e.hist.now()
			a, err := cl.Deposit(ctx, trader.Cents(op.Amount).String(), op.Key)
			op.Return = e.hist.now()
			op.Outcome = classify(err)
			if err != nil {
				op.Err = err.Error()
			} else {
				op.Cash, op.HasCash = parseCash(a.Cash)
			}
		}()
		e.sleep(delay / 2)
		e.event("note", "deposit %s in flight to %s %s (link delayed %v)", op.Key[:8], role, victim, delay)
		e.kill(victim)
		wg.Wait()
		e.hist.add(op)
		e.event("note", "deposit %s: %s after %v (%s)", op.Key[:8], op.Outcome, time.Duration(op.Return-op.Call).Round(time.Millisecond), op.Err)
		if op.Outcome != chaosOK {
			e.anomaly("client-failover", "no definite answer after %s %s died mid-request: %s", role, victim, op.Err)
		}
		e.net.LinkDelay(name, victim, 0)
		e.restart(victim)
		e.expectLeader(nil, "cluster whole again")
	}
}

// chaos695Rounds aims at hashicorp/raft#695: isolate the leader (both ways,
// or only its outgoing messages so the new leader's heartbeats reach it)
// while every node, the old leader included, takes writes; let the
// majority elect and commit; heal while the load continues. The end checks
// (state hash at equal index, Raft log matching on disk, acknowledged
// writes present) would see a divergence.
func chaos695Rounds(e *chaosEnv, rounds int) {
	e.sleep(e.jitter(700 * time.Millisecond))
	for r := 1; r <= rounds; r++ {
		l := e.leader()
		if l == "" {
			if l = e.expectLeader(nil, "leader before the round"); l == "" {
				return
			}
		}
		oneWay := e.rng.IntN(2) == 0
		if oneWay {
			for _, o := range e.others(l) {
				e.net.OneWay(l, o)
			}
			e.event("one-way", "round %d: leader %s's messages lost, the others' still reach it", r, l)
		} else {
			e.net.Isolate(l)
			e.event("partition", "round %d: isolate leader %s", r, l)
		}
		nl := e.expectLeader(e.others(l), fmt.Sprintf("round %d: majority elects", r))
		if nl != "" {
			e.expectWrite(fmt.Sprintf("round %d: new leader commits", r), nl)
		}
		e.heal()
		e.sleep(e.jitter(800 * time.Millisecond))
	}
}

// pollUntil calls f until it returns nil or timeout passes.
func pollUntil(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(25 * time.Millisecond) // polling interval
	}
}

// runChaosScenario runs one scenario in its own environment.
func runChaosScenario(t *testing.T, sc chaosScenario, name string) chaosResult {
	e := newChaosEnv(t, name, sc.opts)
	sc.run(e)
	res := e.finish()
	return res
}

// TestChaos_Scenarios is the short campaign: every scenario once.
func TestChaos_Scenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos: skipped with -short")
	}
	start := time.Now()
	t.Logf("short chaos campaign, seed %d (replay: HATS_CHAOS_SEED=%d)", chaosBaseSeed, chaosBaseSeed)
	for _, sc := range chaosScenarios {
		t.Run(sc.name, func(t *testing.T) { runChaosScenario(t, sc, sc.name) })
	}
	t.Logf("short chaos campaign took %v", time.Since(start).Round(time.Second))
}

// chaosRandomScenario mixes random faults for about d.
func chaosRandomScenario(d time.Duration) func(e *chaosEnv) {
	return func(e *chaosEnv) {
		end := time.Now().Add(d)
		for step := 0; step < 1000 && time.Now().Before(end); step++ {
			e.sleep(e.jitter(700 * time.Millisecond))
			all := e.others()
			l := e.leaderID()
			if l == "" {
				l = pick(e.rng, all)
			}
			switch k := e.rng.IntN(10); k {
			case 0:
				n := pick(e.rng, all)
				e.net.Isolate(n)
				e.event("partition", "isolate %s", n)
			case 1:
				e.net.Isolate(l)
				e.event("partition", "isolate leader %s", l)
			case 2:
				if len(all) < 2 {
					continue
				}
				sh := append([]string(nil), all...)
				e.rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				cut := (len(sh) - 1) / 2
				e.net.Partition(sh[:cut], sh[cut:])
				e.event("partition", "%v | %v", sh[:cut], sh[cut:])
			case 3:
				if len(all) < 3 {
					continue
				}
				if len(all) >= 5 {
					sh := append([]string(nil), all...)
					e.rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
					e.net.Bridge(sh[:2], sh[3:], sh[2])
					e.event("partition", "bridge %v | %s | %v", sh[:2], sh[2], sh[3:])
				} else {
					e.net.Partition([]string{all[0]}, []string{all[2]})
					e.event("partition", "bridge %s | %s | %s", all[0], all[1], all[2])
				}
			case 4:
				for _, o := range e.others(l) {
					e.net.OneWay(l, o)
				}
				e.event("one-way", "leader %s's messages lost", l)
			case 5:
				e.net.SetMode(pick(e.rng, []string{chaosBHMode, chaosRSTMode}))
				e.net.Delay(time.Duration(e.rng.IntN(40))*time.Millisecond, 20*time.Millisecond)
				e.net.Drop(float64(e.rng.IntN(3)) / 100)
				e.event("delay-drop", "%s", e.net.Describe())
			case 6:
				n := pick(e.rng, all)
				e.pause(n, e.jitter(time.Second))
				continue
			case 7:
				n := pick(e.rng, all)
				e.kill(n)
				e.sleep(e.jitter(time.Second))
				e.restart(n)
				continue
			case 8:
				e.kill(l)
				e.sleep(e.jitter(time.Second))
				e.restart(l)
				continue
			case 9:
				sh := append([]string(nil), all...)
				e.rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				maj := sh[:len(sh)/2+1]
				for _, n := range maj {
					e.kill(n)
				}
				e.sleep(e.jitter(time.Second))
				for _, n := range maj {
					e.restart(n)
				}
				continue
			}
			e.sleep(e.jitter(1500 * time.Millisecond))
			e.heal()
			e.net.SetMode(chaosBHMode)
		}
	}
}

// chaosReport accumulates a campaign's results.
type chaosReport struct {
	path      string
	seed      uint64
	start     time.Time
	budget    time.Duration
	rounds    []chaosResult
	faults    map[string]int
	ops       map[string]int
	anomalies []string
}

func (r *chaosReport) add(res chaosResult) {
	r.rounds = append(r.rounds, res)
	for k, v := range res.Faults {
		r.faults[k] += v
	}
	for k, v := range res.Ops {
		r.ops[k] += v
	}
	for _, a := range res.Anomalies {
		r.anomalies = append(r.anomalies, fmt.Sprintf("%s (seed %d): %s", res.Name, res.Seed, a))
	}
}

func (r *chaosReport) write() error {
	if r.path == "" {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# HATS chaos campaign report\n\n")
	fmt.Fprintf(&b, "- started: %s\n- ran: %v of %v\n- campaign seed: %d (replay: HATS_CHAOS_SEED=%d)\n- rounds: %d\n- anomalies: %d\n\n",
		r.start.UTC().Format(time.RFC3339), time.Since(r.start).Round(time.Second), r.budget, r.seed, r.seed, len(r.rounds), len(r.anomalies))
	fmt.Fprintf(&b, "## Faults injected\n\n")
	for _, k := range sortedKeys(r.faults) {
		fmt.Fprintf(&b, "- %s: %d\n", k, r.faults[k])
	}
	fmt.Fprintf(&b, "\n## Operations by outcome\n\n")
	for _, k := range sortedKeys(r.ops) {
		fmt.Fprintf(&b, "- %s: %d\n", k, r.ops[k])
	}
	fmt.Fprintf(&b, "\n## Anomalies\n\n")
	if len(r.anomalies) == 0 {
		fmt.Fprintf(&b, "none\n")
	}
	for _, a := range r.anomalies {
		fmt.Fprintf(&b, "- %s\n", a)
	}
	fmt.Fprintf(&b, "\n## Rounds\n\n| # | scenario | seed | took | liveness | ops | anomalies |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for i, res := range r.rounds {
		n := 0
		for _, v := range res.Ops {
			n += v
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %v | %v | %d | %d |\n", i+1, res.Name, res.Seed, res.Took.Round(time.Second), res.Liveness.Round(time.Millisecond), n, len(res.Anomalies))
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(r.path, []byte(b.String()), 0o644)
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestChaos_LongCampaign runs random scenarios until HATS_CHAOS_DURATION
// has passed, writing the report to HATS_CHAOS_REPORT after every round.
func TestChaos_LongCampaign(t *testing.T) {
	ds := os.Getenv("HATS_CHAOS_DURATION")
	if ds == "" {
		t.Skip("long chaos campaign: set HATS_CHAOS_DURATION (e.g. 30m); `just chaos` does")
	}
	if testing.Short() {
		t.Skip("chaos: skipped with -short")
	}
	budget, err := time.ParseDuration(ds)
	if err != nil {
		t.Fatalf("HATS_CHAOS_DURATION: %v", err)
	}
	rep := &chaosReport{path: os.Getenv("HATS_CHAOS_REPORT"), seed: chaosBaseSeed, start: time.Now(), budget: budget,
		faults: map[string]int{}, ops: map[string]int{}}
	rng := rand.New(rand.NewPCG(chaosBaseSeed, 99))
	t.Logf("long chaos campaign for %v, seed %d, report %q", budget, chaosBaseSeed, rep.path)
	random := func(nodes int) chaosScenario {
		return chaosScenario{name: fmt.Sprintf("random-%dn", nodes), opts: chaosOpts{Nodes: nodes}, run: chaosRandomScenario(20 * time.Second)}
	}
	end := rep.start.Add(budget)
	for round := 1; round < 100_000 && time.Now().Before(end); round++ {
		var sc chaosScenario
		switch k := rng.IntN(3); k {
		case 0:
			sc = random(3)
		case 1:
			sc = random(5)
		default:
			sc = pick(rng, chaosScenarios)
		}
		name := fmt.Sprintf("%04d-%s", round, sc.name)
		var res chaosResult
		ok := t.Run(name, func(t *testing.T) { res = runChaosScenario(t, sc, name) })
		if res.Name == "" {
			res = chaosResult{Name: name, Seed: chaosSeedFor(chaosBaseSeed, name), Anomalies: []string{"scenario aborted (see the test log)"}}
		}
		if !ok && len(res.Anomalies) == 0 {
			res.Anomalies = []string{"test failed outside the checkers (data race or fatal error; see the test log)"}
		}
		rep.add(res)
		if err := rep.write(); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
	t.Logf("long campaign: %d rounds, %d anomalies, faults %v", len(rep.rounds), len(rep.anomalies), rep.faults)
	if len(rep.anomalies) > 0 {
		t.Errorf("campaign seed %d found %d anomalies (report %s)", chaosBaseSeed, len(rep.anomalies), rep.path)
	}
}
