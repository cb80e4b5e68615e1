package cluster_test

// Scenarios on real processes and a real network (see netns_test.go):
// concurrent depositors run while a fault is injected and healed; every
// deposit has a unique idempotency key and a unique amount (so each
// statement line names the deposit that made it) and ends ok, failed or
// unknown. After the heal:
//
//   - liveness: the nodes agree on a leader and a fresh deposit is
//     acknowledged within netnsLiveBound of the heal;
//   - unknown outcomes are resolved by repeating the deposit with the same
//     key (a replay means it had been applied);
//   - exactly once: the balance is the sum of the acknowledged deposits,
//     the statement lists each acknowledged deposit exactly once, no
//     deposit that failed definitely, and nothing else;
//   - convergence: every node reports the same state hash at the same
//     applied index, and every node's local (stale) read of the balance
//     equals the sum.
//
// Each scenario logs its schedule (faults and the leadership changes a
// monitor saw, in seconds since the workload started) and a result line.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

const (
	netnsLiveBound    = 15 * time.Second // heal → agreed leader and an acknowledged fresh deposit
	netnsElectBound   = 15 * time.Second // fault → a leader on the side that can have one
	netnsWorkers      = 4
	netnsMaxPerWorker = 3000             // hard cap on one depositor's deposits
	netnsMaxRun       = 60 * time.Second // depositors stop after this whatever happens
	netnsResolveTries = 5
	netnsMonitorEvery = 100 * time.Millisecond
)

// netnsRun is one scenario: a lab, its cluster, a trader, the workload and
// a monitor.
type netnsRun struct {
	t     *testing.T
	lab   *netLab
	pc    *ProcCluster
	token string
	start time.Time

	mu    sync.Mutex
	sched []string

	recMu    sync.Mutex
	recs     []*depRecord
	next     atomic.Int64 // amounts: 10.00 + next cents, unique within the run
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	monStop chan struct{}
	monWG   sync.WaitGroup
}

func newNetnsRun(t *testing.T, nodes int) *netnsRun {
	t.Helper()
	lab := newNetLab(t, nodes)
	setup := time.Now()
	pc := lab.StartCluster(netnsFlags...)
	r := &netnsRun{t: t, lab: lab, pc: pc, stop: make(chan struct{}), monStop: make(chan struct{})}
	r.token = procTrader(t, pc.Client(), "netns").Token
	t.Logf("%d nodes up in namespaces in %v; leader %s", nodes, time.Since(setup).Round(time.Millisecond), pc.Leader().ID)
	r.start = time.Now()
	r.monitor()
	t.Cleanup(r.stopAll)
	return r
}

// event logs a schedule line stamped with the time since the start.
func (r *netnsRun) event(format string, args ...any) {
	msg := fmt.Sprintf("t+%6.2fs  %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
	r.mu.Lock()
	r.sched = append(r.sched, msg)
	r.mu.Unlock()
	r.t.Log(msg)
}

// monitor records every change of each node's (state, term, leader).
func (r *netnsRun) monitor() {
	for _, p := range r.pc.Nodes {
		r.monWG.Add(1)
		go func(p *Proc) {
			defer r.monWG.Done()
			last := ""
			tick := time.NewTicker(netnsMonitorEvery)
			defer tick.Stop()
			for {
				select {
				case <-r.monStop:
					return
				case <-tick.C:
				}
				var view string
				if st, err := statusOf(p); err != nil {
					view = "unreachable"
				} else {
					view = fmt.Sprintf("%s term %d leader %q", st.State, st.Term, st.Leader)
				}
				if view != last {
					select {
					case <-r.monStop:
						return
					default:
					}
					r.event("  %s: %s", p.ID, view)
					last = view
				}
			}
		}(p)
	}
}

// stopLoad stops the depositors and waits for them.
func (r *netnsRun) stopLoad() {
	r.stopOnce.Do(func() { close(r.stop) })
	r.wg.Wait()
}

func (r *netnsRun) stopAll() {
	r.stopLoad()
	select {
	case <-r.monStop:
	default:
		close(r.monStop)
	}
	r.monWG.Wait()
}

// ---- workload ----

func (r *netnsRun) client(timeout, deadline time.Duration) *transport.Client {
	r.t.Helper()
	cl, err := transport.NewClient(transport.ClientConfig{Nodes: r.pc.Addrs(), Token: r.token, Timeout: timeout, Deadline: deadline})
	if err != nil {
		r.t.Fatal(err)
	}
	return cl
}

// startLoad starts the depositors. Depositor 0 is impatient (half a second
// per call), so calls in flight during a fault end unknown.
func (r *netnsRun) startLoad() {
	stopAt := time.Now().Add(netnsMaxRun)
	for w := 0; w < netnsWorkers; w++ {
		cl := r.client(time.Second, 3*time.Second)
		if w == 0 {
			cl = r.client(400*time.Millisecond, 500*time.Millisecond)
		}
		r.wg.Add(1)
		go func(w int) {
			defer r.wg.Done()
			for i := 0; i < netnsMaxPerWorker && time.Now().Before(stopAt); i++ {
				select {
				case <-r.stop:
					return
				default:
				}
				r.deposit(cl, w)
			}
		}(w)
	}
	r.event("workload: %d depositors", netnsWorkers)
}

// deposit makes and records one deposit with a fresh key and amount.
func (r *netnsRun) deposit(cl *transport.Client, w int) *depRecord {
	c := 1000 + r.next.Add(1)
	d := &depRecord{worker: w, key: transport.NewIdempotencyKey(), amount: fmtCents(c), cents: c, start: time.Now()}
	a, err := cl.Deposit(context.Background(), d.amount, d.key)
	d.end = time.Now()
	switch {
	case err == nil:
		d.outcome, d.replayed = depAcked, a.Replayed
	case errors.Is(err, transport.ErrOutcomeUnknown):
		d.outcome, d.err = depUnknown, err
	default:
		d.outcome, d.err = depFailed, err
	}
	r.recMu.Lock()
	r.recs = append(r.recs, d)
	r.recMu.Unlock()
	return d
}

func (r *netnsRun) records() []*depRecord {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	return append([]*depRecord(nil), r.recs...)
}

// ackedWithin counts deposits sent at or after from and acknowledged by to.
func (r *netnsRun) ackedWithin(from, to time.Time) int {
	n := 0
	for _, d := range r.records() {
		if d.outcome == depAcked && !d.start.Before(from) && !d.end.After(to) {
			n++
		}
	}
	return n
}

func (r *netnsRun) sleep(d time.Duration) { time.Sleep(d) }

// ---- observations and checks ----

// waitNotLeader waits until p no longer claims to lead (an old leader cut
// off from the majority, or thawed after a new election, must step down).
func (r *netnsRun) waitNotLeader(p *Proc, since time.Time, what string) {
	r.t.Helper()
	Poll(r.t, netnsElectBound, p.ID+" steps down", func() error {
		st, err := statusOf(p)
		if err != nil {
			return err
		}
		if st.State == "Leader" {
			return fmt.Errorf("%s still Leader in term %d", p.ID, st.Term)
		}
		return nil
	})
	r.event("%s no longer leads, %v after %s", p.ID, time.Since(since).Round(time.Millisecond), what)
}

// readProbe is a linearizable balance read sent to one node alone (one
// attempt, no failover or leader hints followed).
type readProbe struct {
	node   string
	label  string
	start  time.Time
	floor  int64 // deposits acknowledged before the read began
	result string
}

// probeRead starts a linearizable read through p alone and returns a
// channel that yields it once done. Deposits only add, so a read that
// returns must show at least every deposit acknowledged before it began: a
// node that has lost leadership (isolated, in the minority, or frozen and
// thawed) must refuse or redirect, never answer from its old state.
func (r *netnsRun) probeRead(p *Proc, timeout time.Duration, label string) <-chan readProbe {
	cl, err := transport.NewClient(transport.ClientConfig{Nodes: []string{p.HTTPAddr}, Token: r.token, Timeout: timeout, Deadline: timeout, MaxAttempts: 1})
	if err != nil {
		r.t.Fatal(err)
	}
	ch := make(chan readProbe, 1)
	rp := readProbe{node: p.ID, label: label, start: time.Now()}
	rp.floor = r.ackedSumBefore(rp.start)
	go func() {
		a, err := cl.Account(context.Background(), transport.Linearizable)
		took := time.Since(rp.start).Round(time.Millisecond)
		switch {
		case err != nil:
			rp.result = fmt.Sprintf("refused after %v (%v)", took, err)
		default:
			cc, perr := trader.ParseCents(a.Cash)
			c := int64(cc)
			switch {
			case perr != nil:
				rp.result = fmt.Sprintf("VIOLATION: unreadable cash %q", a.Cash)
			case c < rp.floor:
				rp.result = fmt.Sprintf("VIOLATION: stale read: %s at index %d after %v, but %s had been acknowledged before the read began",
					a.Cash, a.AppliedIndex, took, fmtCents(rp.floor))
			default:
				rp.result = fmt.Sprintf("served %s at index %d after %v (>= %s acknowledged before it)", a.Cash, a.AppliedIndex, took, fmtCents(rp.floor))
			}
		}
		ch <- rp
	}()
	return ch
}

// checkRead logs a finished probe and fails the test on a stale answer.
func (r *netnsRun) checkRead(ch <-chan readProbe) {
	r.t.Helper()
	rp := <-ch
	r.event("read via %s (%s): %s", rp.node, rp.label, rp.result)
	if strings.HasPrefix(rp.result, "VIOLATION") {
		r.t.Fatalf("linearizable read via %s (%s) sent at t+%.2fs: %s", rp.node, rp.label, rp.start.Sub(r.start).Seconds(), rp.result)
	}
}

// ackedSumBefore sums the deposits acknowledged before t.
func (r *netnsRun) ackedSumBefore(t time.Time) int64 {
	var sum int64
	for _, d := range r.records() {
		if d.outcome == depAcked && d.end.Before(t) {
			sum += d.cents
		}
	}
	return sum
}

// availableDuring asserts that the side with a majority acknowledged
// deposits sent in [from, to] (from: its leader's election, or a grace
// period into the fault; to: the heal).
func (r *netnsRun) availableDuring(from, to time.Time) {
	r.t.Helper()
	n := r.ackedWithin(from, to)
	r.event("available during the fault: %d deposits sent and acknowledged in the %v from t+%.2fs to the heal",
		n, to.Sub(from).Round(time.Millisecond), from.Sub(r.start).Seconds())
	if n == 0 {
		r.t.Fatalf("the majority acknowledged no deposit in the %v before the heal", to.Sub(from).Round(time.Millisecond))
	}
}

// liveAfter checks liveness after a heal: an agreed leader among every
// running node and an acknowledged fresh deposit within netnsLiveBound.
func (r *netnsRun) liveAfter(healAt time.Time) {
	r.t.Helper()
	leader := netnsLeaderAmong(r.t, netnsLiveBound, r.pc.Live()...)
	tLeader := time.Since(healAt)
	left := netnsLiveBound - time.Since(healAt)
	if left <= 0 {
		r.t.Fatalf("liveness: a leader only %v after the heal (bound %v)", tLeader.Round(time.Millisecond), netnsLiveBound)
	}
	d := r.deposit(r.client(time.Second, left), -1)
	if d.outcome != depAcked {
		r.t.Fatalf("liveness: no deposit acknowledged within %v of the heal: %v", netnsLiveBound, d.err)
	}
	r.event("liveness: all nodes name %s %v after the heal; a fresh deposit acknowledged %v after the heal",
		leader.ID, tLeader.Round(time.Millisecond), d.end.Sub(healAt).Round(time.Millisecond))
}

// finish stops the workload and runs every check.
func (r *netnsRun) finish() {
	t := r.t
	t.Helper()
	r.stopLoad()
	r.event("workload stopped")
	r.pc.WaitReady()

	recs := r.records()
	var acked, failed, unknown, replays int
	for _, d := range recs {
		switch d.outcome {
		case depAcked:
			acked++
			if d.replayed {
				replays++
			}
		case depFailed:
			failed++
		case depUnknown:
			unknown++
		}
	}
	t.Logf("%d deposits: %d acked (%d as replays of an earlier attempt), %d failed, %d unknown", len(recs), acked, replays, failed, unknown)
	var failures []string
	for _, d := range recs {
		if d.outcome == depFailed && len(failures) < 5 {
			failures = append(failures, fmt.Sprintf("%s: %v", d.amount, d.err))
		}
	}
	if len(failures) > 0 {
		t.Logf("first definite failures: %s", strings.Join(failures, "; "))
	}

	// Resolve every unknown outcome with the same key.
	resolver := r.client(3*time.Second, 20*time.Second)
	var resApplied, resFresh int
	for _, d := range recs {
		if d.outcome != depUnknown {
			continue
		}
		var a *transport.Account
		var err error
		for i := 0; i < netnsResolveTries; i++ {
			if a, err = resolver.Deposit(context.Background(), d.amount, d.key); !errors.Is(err, transport.ErrOutcomeUnknown) {
				break
			}
		}
		if err != nil {
			t.Fatalf("deposit %s (key %s) still not definite after the heal: %v (first error: %v)", d.amount, d.key, err, d.err)
		}
		d.outcome, d.resolved, d.replayed = depAcked, true, a.Replayed
		if a.Replayed {
			resApplied++
		} else {
			resFresh++
		}
	}
	if unknown > 0 {
		t.Logf("resolved %d unknown outcomes: %d had been applied (replayed), %d had not (applied now)", unknown, resApplied, resFresh)
	}

	// Exactly once: balance and statement.
	want := map[int64]bool{} // amount → acked
	var sum int64
	for _, d := range recs {
		switch d.outcome {
		case depAcked:
			want[d.cents] = true
			sum += d.cents
		case depFailed:
			want[d.cents] = false
		}
	}
	if got := accountCash(t, resolver, transport.Linearizable); got != sum {
		t.Fatalf("balance %s, want %s: the sum of every acknowledged deposit", fmtCents(got), fmtCents(sum))
	}
	seen := map[int64]int{}
	var after uint64
	entries := 0
	for page := 0; page < 100; page++ {
		act, err := resolver.Activity(context.Background(), transport.ActivityQuery{After: after, Limit: transport.MaxActivity})
		if err != nil {
			t.Fatalf("statement: %v", err)
		}
		for _, e := range act.Entries {
			if e.Kind != "deposit" {
				t.Fatalf("statement has a %s entry; this trader only deposits: %+v", e.Kind, e)
			}
			seen[cents(t, e.Amount)]++
			entries++
		}
		after = act.NextAfter
		if !act.More {
			break
		}
	}
	var problems []string
	for c, n := range seen {
		ok, known := want[c]
		switch {
		case !known:
			problems = append(problems, fmt.Sprintf("%s applied %d times but never sent", fmtCents(c), n))
		case !ok:
			problems = append(problems, fmt.Sprintf("%s failed definitely but was applied %d times", fmtCents(c), n))
		case n != 1:
			problems = append(problems, fmt.Sprintf("%s applied %d times", fmtCents(c), n))
		}
	}
	for c, ok := range want {
		if ok && seen[c] == 0 {
			problems = append(problems, fmt.Sprintf("acknowledged %s missing from the statement", fmtCents(c)))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Fatalf("exactly-once violated (%d problems): %s", len(problems), strings.Join(problems[:min(20, len(problems))], "; "))
	}

	// Convergence.
	hash, idx := r.pc.WaitSame()
	for _, p := range r.pc.Nodes {
		cl := r.pc.Client(p)
		cl.SetToken(r.token)
		if got := accountCash(t, cl, transport.Stale); got != sum {
			t.Fatalf("%s (stale read) has %s, want %s", p.ID, fmtCents(got), fmtCents(sum))
		}
	}
	r.scanLogs()
	r.event("checks passed")
	r.mu.Lock()
	sched := strings.Join(r.sched, "\n")
	r.mu.Unlock()
	t.Logf("schedule:\n%s", sched)
	t.Logf("RESULT %s: %d deposits (%d acked, %d failed, %d unknown -> %d applied, %d fresh); statement %d entries, each acked deposit exactly once; balance %s; %d nodes at applied index %d, state hash %s",
		t.Name(), len(recs), acked, failed, unknown, resApplied, resFresh, entries, fmtCents(sum), len(r.pc.Nodes), idx, hash)
}

// scanLogs fails on a node that panicked or raced and logs, per node, how
// many warnings and errors it wrote, by kind (HATS's own slog lines by
// msg, the Raft library's by message without its fields).
func (r *netnsRun) scanLogs() {
	r.t.Helper()
	for _, p := range r.pc.Nodes {
		out := p.Stderr()
		for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
			if strings.Contains(out, bad) {
				r.t.Fatalf("%s wrote %q to stderr", p.ID, bad)
			}
		}
		kinds := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			if k := netnsLogKind(line); k != "" {
				kinds[k]++
			}
		}
		var list []string
		for k, n := range kinds {
			list = append(list, fmt.Sprintf("%dx %s", n, k))
		}
		sort.Strings(list)
		if len(list) == 0 {
			list = []string{"none"}
		}
		r.t.Logf("%s warnings and errors: %s", p.ID, strings.Join(list, "; "))
	}
}

// netnsLogKind classifies a warning or error line of a node's stderr ("" for
// other lines).
func netnsLogKind(line string) string {
	for _, lv := range []string{"WARN", "ERROR"} {
		if i := strings.Index(line, "level="+lv+" "); i >= 0 {
			msg := line[i:]
			if j := strings.Index(msg, "msg="); j >= 0 {
				msg = msg[j+4:]
				if strings.HasPrefix(msg, `"`) {
					if k := strings.Index(msg[1:], `"`); k >= 0 {
						msg = msg[1 : k+1]
					}
				} else if k := strings.Index(msg, " "); k >= 0 {
					msg = msg[:k]
				}
			}
			return lv + " " + msg
		}
		if i := strings.Index(line, "["+lv+"] raft."); i >= 0 {
			msg := line[i+len(lv)+3:]
			if j := strings.Index(msg, ": "); j >= 0 {
				msg = msg[j+2:] // drop "raft.nX"
			}
			for _, sep := range []string{": ", " peer=", " target=", " error=", " id="} {
				if j := strings.Index(msg, sep); j >= 0 {
					msg = msg[:j]
				}
			}
			return lv + " raft: " + msg
		}
	}
	return ""
}

// ---- scenarios ----

// The leader is cut off from both followers (clients still reach it) under
// deposit load; the followers elect a new leader and serve; the old leader
// steps down and acknowledges nothing it cannot commit; after the heal it
// follows and catches up.
func TestNetns_LeaderIsolated(t *testing.T) {
	r := newNetnsRun(t, 3)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	rest := netnsExcept(r.pc.Nodes, old)
	cutAt := time.Now()
	r.lab.Isolate(old)
	r.event("FAULT isolate leader %s from %s, both ways", old.ID, netnsIDs(rest))
	t.Logf("nft drop rules in force:\n%s", r.lab.Rules())
	nl := netnsLeaderAmong(t, netnsElectBound, rest...)
	elected := time.Now()
	r.event("%s leads %s, %v after the cut", nl.ID, netnsIDs(rest), elected.Sub(cutAt).Round(time.Millisecond))
	r.waitNotLeader(old, cutAt, "the fault")
	r.sleep(500 * time.Millisecond)
	r.checkRead(r.probeRead(old, time.Second, "isolated old leader"))
	r.checkRead(r.probeRead(nl, time.Second, "new leader"))
	r.sleep(time.Second)
	healAt := time.Now()
	r.lab.Heal()
	r.event("HEAL")
	r.availableDuring(elected, healAt)
	r.liveAfter(healAt)
	r.sleep(time.Second)
	r.finish()
}

// Packets from the leader to one follower are dropped; the follower still
// reaches the leader. The leader and the other follower are a majority and
// keep serving (with at most a few elections); after the heal the cut
// follower catches up.
func TestNetns_OneWayLeaderToFollower(t *testing.T) {
	r := newNetnsRun(t, 3)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	f := netnsExcept(r.pc.Nodes, old)[0]
	cutAt := time.Now()
	r.lab.CutOneWay(old, f)
	r.event("FAULT drop packets %s -> %s (leader -> follower; %s -> %s still flows)", old.ID, f.ID, f.ID, old.ID)
	t.Logf("nft drop rules in force:\n%s", r.lab.Rules())
	r.sleep(4 * time.Second)
	healAt := time.Now()
	r.lab.Heal()
	r.event("HEAL")
	r.availableDuring(cutAt.Add(time.Second), healAt)
	r.liveAfter(healAt)
	r.sleep(time.Second)
	r.finish()
}

// The link between the leader and one follower is cut both ways; the
// other follower still reaches both (a bridge). The leader keeps a majority
// through the bridge node, so the cluster keeps serving; the cut follower
// must not take over (it cannot win a majority without the bridge node,
// which hears the leader) nor stall the others; after the heal it catches up.
func TestNetns_LinkCutLeaderFollower(t *testing.T) {
	r := newNetnsRun(t, 3)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	rest := netnsExcept(r.pc.Nodes, old)
	f, bridge := rest[0], rest[1]
	cutAt := time.Now()
	r.lab.Cut(old, f)
	r.event("FAULT cut %s <-> %s both ways (leader <-> follower; %s reaches both)", old.ID, f.ID, bridge.ID)
	t.Logf("nft drop rules in force:\n%s", r.lab.Rules())
	r.sleep(4 * time.Second)
	healAt := time.Now()
	r.lab.Heal()
	r.event("HEAL")
	r.availableDuring(cutAt.Add(time.Second), healAt)
	r.liveAfter(healAt)
	r.sleep(time.Second)
	r.finish()
}

// Five nodes split 2 | 3 with the leader in the minority: the majority
// elects a leader and serves, the minority's leader steps down, and after
// the heal all five converge.
func TestNetns_MinorityMajoritySplit(t *testing.T) {
	r := newNetnsRun(t, 5)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	rest := netnsExcept(r.pc.Nodes, old)
	minority := []*Proc{old, rest[0]}
	majority := rest[1:]
	cutAt := time.Now()
	r.lab.Partition(minority, majority)
	r.event("FAULT split minority %s (with the leader) | majority %s", netnsIDs(minority), netnsIDs(majority))
	t.Logf("nft drop rules in force:\n%s", r.lab.Rules())
	nl := netnsLeaderAmong(t, netnsElectBound, majority...)
	elected := time.Now()
	r.event("%s leads the majority, %v after the split", nl.ID, elected.Sub(cutAt).Round(time.Millisecond))
	r.waitNotLeader(old, cutAt, "the fault")
	r.sleep(500 * time.Millisecond)
	a, b := r.probeRead(minority[0], time.Second, "minority, old leader"), r.probeRead(minority[1], time.Second, "minority")
	r.checkRead(a)
	r.checkRead(b)
	r.sleep(time.Second)
	healAt := time.Now()
	r.lab.Heal()
	r.event("HEAL")
	r.availableDuring(elected, healAt)
	r.liveAfter(healAt)
	r.sleep(time.Second)
	r.finish()
}

// The leader is frozen (SIGSTOP) for ten election timeouts under load; the
// others elect a new leader; after SIGCONT the old leader learns the new
// term, steps down and catches up.
func TestNetns_PausedLeader(t *testing.T) {
	r := newNetnsRun(t, 3)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	rest := netnsExcept(r.pc.Nodes, old)
	stopAt := time.Now()
	old.Stop()
	r.event("FAULT SIGSTOP leader %s", old.ID)
	nl := netnsLeaderAmong(t, netnsElectBound, rest...)
	elected := time.Now()
	r.event("%s leads %s, %v after SIGSTOP", nl.ID, netnsIDs(rest), elected.Sub(stopAt).Round(time.Millisecond))
	r.sleep(time.Until(stopAt.Add(3*time.Second)) - 200*time.Millisecond)
	// A read sent to the frozen old leader waits in its socket and is the
	// first thing it sees on SIGCONT, while it still believes it leads.
	probe := r.probeRead(old, 3*time.Second, "frozen old leader, answered after SIGCONT")
	r.sleep(200 * time.Millisecond)
	healAt := time.Now()
	old.Cont()
	r.event("HEAL SIGCONT %s after %v stopped", old.ID, healAt.Sub(stopAt).Round(time.Millisecond))
	r.checkRead(probe)
	r.availableDuring(elected, healAt)
	r.liveAfter(healAt)
	r.waitNotLeader(old, healAt, "SIGCONT")
	r.sleep(time.Second)
	r.finish()
}

// The leader is SIGKILLed under load; the others elect a new leader; the
// old leader restarts on its data dir, addresses and flags, rejoins as a
// follower and catches up.
func TestNetns_KillLeaderRestart(t *testing.T) {
	r := newNetnsRun(t, 3)
	r.startLoad()
	r.sleep(time.Second)
	old := r.pc.Leader()
	rest := netnsExcept(r.pc.Nodes, old)
	killAt := time.Now()
	old.Kill()
	r.event("FAULT SIGKILL leader %s", old.ID)
	nl := netnsLeaderAmong(t, netnsElectBound, rest...)
	elected := time.Now()
	r.event("%s leads %s, %v after SIGKILL", nl.ID, netnsIDs(rest), elected.Sub(killAt).Round(time.Millisecond))
	r.sleep(2 * time.Second)
	healAt := time.Now()
	r.lab.Start(old)
	r.event("HEAL restarted %s (same data dir and addresses) in %v", old.ID, time.Since(healAt).Round(time.Millisecond))
	r.availableDuring(elected, healAt)
	r.liveAfter(healAt)
	r.sleep(time.Second)
	r.finish()
}
