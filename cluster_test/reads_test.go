package cluster_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// readAccount is GET /v1/account with the given consistency ("" sends no
// query parameter, so the default applies).
func readAccount(tok string, consistency string) rawReq {
	path := "/v1/account"
	if consistency != "" {
		path += "?consistency=" + consistency
	}
	return rawReq{method: "GET", path: path, token: tok}
}

func depositReq(tok, amount string) rawReq {
	return rawReq{method: "POST", path: "/v1/account/deposit", token: tok, body: jsonBody(map[string]string{"amount": amount})}
}

// Test_Read_AfterAck_VisibleEverywhere: once a write is acknowledged
// through any node, linearizable, leader and default reads through every
// other node return it on the first try.
func Test_Read_AfterAck_VisibleEverywhere(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client()
	acct := Trader(t, cl, "rita")
	tok := cl.Token()
	byID := fmt.Sprintf("/v1/accounts/%d", acct.AccountID)
	for round := 0; round < 3; round++ {
		for _, a := range c.Nodes {
			w := okAccount(t, send(t, a.HTTPAddr, depositReq(tok, "1.25")))
			for _, b := range c.Nodes {
				if b == a {
					continue
				}
				for _, cons := range []string{"linearizable", "leader", ""} {
					for _, rq := range []rawReq{readAccount(tok, cons), {method: "GET", path: byID + "?consistency=" + cons, token: tok}} {
						got := okAccount(t, send(t, b.HTTPAddr, rq))
						if got.Cash != w.Cash || got.AppliedIndex < w.AppliedIndex {
							t.Fatalf("round %d: write acked via %s at index %d with cash %s; %s read %s via %s saw cash %s at index %d",
								round, a.ID, w.AppliedIndex, w.Cash, cons, rq.path, b.ID, got.Cash, got.AppliedIndex)
						}
					}
				}
			}
		}
	}
	mustCash(t, cl, transport.Linearizable, "11.25")
	c.EnsureSame()
}

// Test_Read_Stale_FollowerEventuallySees: stale reads on followers answer
// from local state at once, show either the previous or the new balance
// (never anything else), and eventually show an acknowledged write.
func Test_Read_Stale_FollowerEventuallySees(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client()
	Trader(t, cl, "sam")
	tok := cl.Token()
	leader := c.Leader()
	for i, want := range []string{"5.00", "10.00", "15.00"} {
		prev := []string{"0.00", "5.00", "10.00"}[i]
		w := okAccount(t, send(t, leader.HTTPAddr, depositReq(tok, "5.00")))
		if w.Cash != want {
			t.Fatalf("deposit answered cash %s, want %s", w.Cash, want)
		}
		for _, f := range c.Followers() {
			Poll(t, 5*time.Second, "stale read on "+f.ID+" shows "+want, func() error {
				r, err := rawDo(f.HTTPAddr, readAccount(tok, "stale"))
				if err != nil {
					return err
				}
				got := okAccount(t, r)
				switch got.Cash {
				case want:
					return nil
				case prev:
					return fmt.Errorf("still %s at index %d", got.Cash, got.AppliedIndex)
				}
				t.Fatalf("stale read on %s shows %s: neither %s nor %s", f.ID, got.Cash, prev, want)
				return nil
			})
		}
	}
	c.EnsureSame()
}

// Test_Read_ConsistencyParam: every level is accepted on both account
// endpoints and on every node, and anything else is refused.
func Test_Read_ConsistencyParam(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client()
	acct := Trader(t, cl, "tess")
	if _, err := cl.Deposit(t.Context(), "3.00", ""); err != nil {
		t.Fatal(err)
	}
	tok := cl.Token()
	c.EnsureSame() // so even stale reads see the deposit
	for _, tn := range c.Nodes {
		for _, base := range []string{"/v1/account", fmt.Sprintf("/v1/accounts/%d", acct.AccountID)} {
			for _, q := range []string{"", "?consistency=", "?consistency=stale", "?consistency=leader", "?consistency=linearizable"} {
				got := okAccount(t, send(t, tn.HTTPAddr, rawReq{method: "GET", path: base + q, token: tok}))
				if got.Cash != "3.00" || got.AccountID != acct.AccountID {
					t.Fatalf("%s%s via %s: %+v", base, q, tn.ID, got)
				}
			}
			for _, q := range []string{"?consistency=strong", "?consistency=Linearizable", "?consistency=stale%20"} {
				apiError(t, send(t, tn.HTTPAddr, rawReq{method: "GET", path: base + q, token: tok}), http.StatusBadRequest, transport.CodeBadRequest, "consistency", "stale, leader or linearizable")
			}
		}
	}
}

// Test_Read_DeposedLeader_NoLinearizableReads isolates the leader by
// killing both followers: it can no longer confirm it leads, so
// linearizable reads (and the account default, which must be
// linearizable) fail with 503 rather than serve possibly stale state, while
// stale reads still answer from local state. With the followers back, the
// same reads succeed again.
func Test_Read_DeposedLeader_NoLinearizableReads(t *testing.T) {
	const applyTimeout = 2 * time.Second // bounds each read's wait
	c := NewCluster(t, 3, func(cfg *node.Config) { cfg.ApplyTimeout = applyTimeout })
	cl := c.Client()
	acct := Trader(t, cl, "uma")
	tok := cl.Token()
	old := c.Leader()
	if w := okAccount(t, send(t, old.HTTPAddr, depositReq(tok, "42.00"))); w.Cash != "42.00" {
		t.Fatalf("deposit: %+v", w)
	}
	c.EnsureSame()
	followers := c.Followers()
	for _, f := range followers {
		c.Kill(f)
	}

	stale := okAccount(t, send(t, old.HTTPAddr, readAccount(tok, "stale")))
	if stale.Cash != "42.00" {
		t.Fatalf("stale read on isolated node: %+v", stale)
	}

	// Every non-stale read, concurrently so the test waits one timeout.
	byID := fmt.Sprintf("/v1/accounts/%d", acct.AccountID)
	refused := map[string]rawReq{
		"linearizable":       readAccount(tok, "linearizable"),
		"default":            readAccount(tok, ""),
		"by-id/linearizable": {method: "GET", path: byID + "?consistency=linearizable", token: tok},
		"by-id/default":      {method: "GET", path: byID, token: tok},
	}
	checkRefused := func(what string, rq rawReq) error {
		start := time.Now()
		r, err := rawDo(old.HTTPAddr, rq)
		if err != nil {
			return err
		}
		took := time.Since(start)
		if r.status != http.StatusServiceUnavailable {
			return fmt.Errorf("%s read on isolated old leader: want 503, got %s", what, r)
		}
		var eb transport.ErrorBody
		if err := json.Unmarshal(r.body, &eb); err != nil {
			return fmt.Errorf("%s: error body: %v: %s", what, err, r)
		}
		if eb.Error.Code != transport.CodeNoLeader && eb.Error.Code != transport.CodeUnavailable {
			return fmt.Errorf("%s: code %q, want no_leader or unavailable: %s", what, eb.Error.Code, r)
		}
		if strings.Contains(string(r.body), "42.00") || strings.Contains(string(r.body), `"cash"`) {
			return fmt.Errorf("%s: refusal carries account data: %s", what, r)
		}
		if took > applyTimeout+3*time.Second {
			return fmt.Errorf("%s: refused only after %v", what, took)
		}
		t.Logf("%s read refused after %v: %s", what, took.Round(time.Millisecond), eb.Error.Message)
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(refused)+1)
	for what, rq := range refused {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- checkRefused(what, rq)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Once it has stepped down it knows no leader, so a leader read
		// fails too.
		deadline := time.Now().Add(5 * time.Second)
		for old.Node.IsLeader() {
			if time.Now().After(deadline) {
				errs <- errors.New("isolated leader never stepped down")
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		errs <- checkRefused("leader", readAccount(tok, "leader"))
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Stale reads keep answering throughout.
	if s := okAccount(t, send(t, old.HTTPAddr, readAccount(tok, "stale"))); s.Cash != "42.00" {
		t.Fatalf("stale read after refusals: %+v", s)
	}

	for _, f := range followers {
		c.Restart(f)
	}
	Poll(t, 15*time.Second, "linearizable read on the old leader succeeds again", func() error {
		r, err := rawDo(old.HTTPAddr, readAccount(tok, "linearizable"))
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			var sts []string
			for _, tn := range c.Live() {
				st := tn.Node.Status()
				sts = append(sts, fmt.Sprintf("%s:%s term=%d leader=%s applied=%d commit=%d last=%d", st.ID, st.State, st.Term, st.Leader, st.AppliedIndex, st.CommitIndex, st.LastIndex))
			}
			return fmt.Errorf("%s [%s]", r, strings.Join(sts, "; "))
		}
		if a := okAccount(t, r); a.Cash != "42.00" {
			t.Fatalf("after recovery: %+v", a)
		}
		return nil
	})
	c.WaitReady()
	for what, rq := range refused {
		if a := okAccount(t, send(t, old.HTTPAddr, rq)); a.Cash != "42.00" {
			t.Fatalf("%s after recovery: %+v", what, a)
		}
	}
	// And a write through the old leader is visible linearizably everywhere.
	w := okAccount(t, send(t, old.HTTPAddr, depositReq(tok, "1.00")))
	for _, tn := range c.Nodes {
		if a := okAccount(t, send(t, tn.HTTPAddr, readAccount(tok, ""))); a.Cash != w.Cash || a.Cash != "43.00" {
			t.Fatalf("via %s: %+v, want %s", tn.ID, a, w.Cash)
		}
	}
	c.EnsureSame()
}

// Test_Read_Linearizable_AfterLeaderChange_NoWrites: a new leader that has
// not yet taken any write must still serve linearizable reads (the account
// default) through every node. Raft's election no-op and the leader's
// barrier never reach the state machine, so a read index that points at
// them must not be waited for forever.
func Test_Read_Linearizable_AfterLeaderChange_NoWrites(t *testing.T) {
	const applyTimeout = 2 * time.Second
	c := NewCluster(t, 3, func(cfg *node.Config) { cfg.ApplyTimeout = applyTimeout })
	cl := c.Client()
	Trader(t, cl, "vera")
	tok := cl.Token()
	if w := okAccount(t, send(t, c.Leader().HTTPAddr, depositReq(tok, "9.00"))); w.Cash != "9.00" {
		t.Fatalf("deposit: %+v", w)
	}
	old := c.Leader()
	target := c.Followers()[0]
	if err := cl.TransferLeadership(t.Context(), target.ID); err != nil {
		t.Fatal(err)
	}
	Poll(t, 5*time.Second, target.ID+" leads", func() error {
		if l := c.Leader(); l != target {
			return fmt.Errorf("leader is %s", l.ID)
		}
		return nil
	})
	for _, tn := range c.Nodes {
		for _, cons := range []string{"linearizable", ""} {
			r := send(t, tn.HTTPAddr, readAccount(tok, cons))
			if r.status != http.StatusOK {
				st := tn.Node.Status()
				t.Fatalf("%q read via %s after leadership moved %s -> %s: %s (node applied=%d commit=%d last=%d)",
					cons, tn.ID, old.ID, target.ID, r, st.AppliedIndex, st.CommitIndex, st.LastIndex)
			}
			if a := okAccount(t, r); a.Cash != "9.00" {
				t.Fatalf("via %s: %+v", tn.ID, a)
			}
		}
	}
	c.EnsureSame()
}
