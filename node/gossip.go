package node

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// memberMeta is what each node advertises in the gossip ring: the seed's
// "TS registers with the LDS" as a continuously refreshed record.
type memberMeta struct {
	ID       string   `json:"id"`
	HTTP     string   `json:"http"`
	Roles    []string `json:"roles"`
	Raft     string   `json:"raft"`
	Healthy  bool     `json:"healthy"`
	Sessions int64    `json:"sessions"`
	RPS      float64  `json:"rps"`
}

// gossip runs the memberlist ring that gives every node (every LDS) a live
// view of all Trading Servers: address, roles, Raft state, health, load.
type gossip struct {
	n  *Node
	ml *memberlist.Memberlist

	mu   sync.Mutex
	meta []byte

	// view is a copy of the ring taken inside memberlist's event callbacks
	// (which run under its lock): memberlist's own Members() hands out
	// pointers it keeps mutating.
	viewMu sync.Mutex
	view   map[string]viewEntry

	requests atomic.Uint64 // API calls served, for requests/s
	stop     chan struct{}
	done     chan struct{}
}

type viewEntry struct {
	addr   string
	meta   []byte
	health string
}

type gossipEvents struct{ g *gossip }

func (e gossipEvents) NotifyJoin(n *memberlist.Node)   { e.g.record(n, "alive") }
func (e gossipEvents) NotifyUpdate(n *memberlist.Node) { e.g.record(n, "alive") }
func (e gossipEvents) NotifyLeave(n *memberlist.Node)  { e.g.record(n, "dead") }

func (g *gossip) record(n *memberlist.Node, health string) {
	e := viewEntry{addr: n.Address(), meta: append([]byte(nil), n.Meta...), health: health}
	g.viewMu.Lock()
	g.view[n.Name] = e
	g.viewMu.Unlock()
}

type gossipDelegate struct{ g *gossip }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	if len(d.g.meta) > limit {
		return nil
	}
	return d.g.meta
}
func (gossipDelegate) NotifyMsg([]byte)                    {}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (gossipDelegate) LocalState(bool) []byte              { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, _ bool) {}

// Failure detection is tuned so a dead node leaves the view within about a
// second or two on a LAN: probes every 300 ms, 200 ms to answer, and a
// short suspicion (3 probe intervals) before it is declared dead.
func gossipConfig(id, addr string) (*memberlist.Config, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --gossip-addr %q: %v", ErrConfig, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("%w: --gossip-addr port %q", ErrConfig, portStr)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = id
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.ProbeInterval = 300 * time.Millisecond
	mc.ProbeTimeout = 200 * time.Millisecond
	mc.SuspicionMult = 3
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 5 * time.Second
	mc.TCPTimeout = time.Second
	mc.Logger = log.New(io.Discard, "", 0)
	return mc, nil
}

func (n *Node) startGossip() error {
	if n.cfg.GossipAddr == "" {
		return nil
	}
	g := &gossip{n: n, stop: make(chan struct{}), done: make(chan struct{}), view: map[string]viewEntry{}}
	g.meta = g.buildMeta()
	mc, err := gossipConfig(n.cfg.ID, n.cfg.GossipAddr)
	if err != nil {
		return err
	}
	if len(n.cfg.GossipKey) > 0 {
		mc.SecretKey = n.cfg.GossipKey // memberlist checks the length
	}
	mc.Delegate = gossipDelegate{g}
	mc.Events = gossipEvents{g}
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("%w: gossip on %s: %v", ErrConfig, n.cfg.GossipAddr, err)
	}
	n.gossip = g
	go g.loop()
	return nil
}

// close leaves the ring gracefully (others drop this node at once) or,
// for a simulated crash, just stops answering.
func (g *gossip) close(graceful bool) {
	if g == nil {
		return
	}
	close(g.stop)
	<-g.done
	if graceful {
		_ = g.ml.Leave(500 * time.Millisecond)
	}
	_ = g.ml.Shutdown()
}

func (g *gossip) buildMeta() []byte {
	n := g.n
	healthy := n.Ready() == nil
	var sessions int64
	_ = n.fsm.View(func(v *fsm.View) error { sessions = v.Assignments()[n.cfg.ID]; return nil })
	roles := []string{"LDS", "TS"}
	if n.eng != nil && n.eng.running.Load() {
		roles = append(roles, "ME")
	}
	m := memberMeta{ID: n.cfg.ID, HTTP: n.cfg.HTTPAddr, Roles: roles, Raft: n.raft.State().String(),
		Healthy: healthy, Sessions: sessions, RPS: g.rate()}
	b, _ := json.Marshal(m)
	return b
}

var lastRate atomic.Uint64 // float64 bits, shared by the loop and readers

func (g *gossip) rate() float64 { return float64frombits(lastRate.Load()) }

// loop refreshes this node's advertised record and joins any member whose
// gossip address the replicated state knows but the ring does not.
func (g *gossip) loop() {
	defer close(g.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var prevReq uint64
	prevAt := time.Now()
	for i := 0; ; i++ {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		req := g.requests.Load()
		lastRate.Store(float64bits(float64(req-prevReq) / now.Sub(prevAt).Seconds()))
		prevReq, prevAt = req, now
		meta := g.buildMeta()
		g.mu.Lock()
		changed := string(meta) != string(g.meta)
		g.meta = meta
		g.mu.Unlock()
		if changed {
			_ = g.ml.UpdateNode(time.Second)
		}
		if i%4 == 0 {
			g.joinKnown()
		}
	}
}

func (g *gossip) joinKnown() {
	known := map[string]bool{}
	g.viewMu.Lock()
	for name, e := range g.view {
		known[name] = e.health == "alive"
	}
	g.viewMu.Unlock()
	var addrs []string
	_ = g.n.fsm.View(func(v *fsm.View) error {
		for _, na := range v.Nodes() {
			if !known[na.ID] && na.GossipAddr != "" && na.ID != g.n.cfg.ID {
				addrs = append(addrs, na.GossipAddr)
			}
		}
		return nil
	})
	if len(addrs) > 0 {
		_, _ = g.ml.Join(addrs)
	}
}

// Members is the LDS view: every node the gossip ring knows, with its
// advertised record and liveness.
func (n *Node) Members() []transport.Member {
	if n.gossip == nil {
		return nil
	}
	var out []transport.Member
	n.gossip.viewMu.Lock()
	for name, e := range n.gossip.view {
		var meta memberMeta
		_ = json.Unmarshal(e.meta, &meta)
		out = append(out, transport.Member{
			ID: name, HTTPAddr: meta.HTTP, GossipAddr: e.addr, Roles: meta.Roles, RaftState: meta.Raft,
			Health: e.health, Healthy: e.health == "alive" && meta.Healthy, Sessions: meta.Sessions, RPS: meta.RPS,
		})
	}
	n.gossip.viewMu.Unlock()
	slices.SortFunc(out, func(a, b transport.Member) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// CountRequest records one API request for the load figure.
func (n *Node) CountRequest() {
	if n.gossip != nil {
		n.gossip.requests.Add(1)
	}
}

func float64bits(f float64) uint64     { return math.Float64bits(f) }
func float64frombits(b uint64) float64 { return math.Float64frombits(b) }
