package cluster_test

// Real processes on a real network: each `hats node` runs in its own Linux
// network namespace with its own address, and faults are packet filters.
//
// One lab (netLab) per test:
//
//	host namespace                      node namespaces
//	  bridge hb<tag>  10.99.S.1/24  ──┬── veth ── eth0 10.99.S.11  (n1)
//	  (the test's clients use it)     ├── veth ── eth0 10.99.S.12  (n2)
//	                                  └── veth ── eth0 10.99.S.13  (n3) ...
//
// S is a subnet number no interface or route of the host uses, claimed by
// an exclusive lock file so parallel runs never share one; <tag> is the
// test binary's pid plus a counter, so names never clash either. The only
// addresses ever used are the ones of this subnet, which exists only on
// the lab's bridge and inside its namespaces: no packet leaves the lab.
//
// Faults are nftables rules inside the node namespaces (table inet
// hatsfault): a cut of the directed link A→B drops, in A's namespace,
// packets to B's address, and in B's namespace packets from A's. Every
// change rewrites each namespace's table in one nft transaction, so a
// partition appears and heals atomically per node. Drop (not reject) is a
// real partition: TCP retransmits into the void until timeouts fire, and
// connections resume when the link heals. Raft, leader forwarding, read
// index, joins and gossip (UDP and TCP) all cross the cut; the test's own
// clients, which speak from the bridge address, are never cut, so they
// still reach a node that is cut off from its peers (an isolated old
// leader) and must get no false acknowledgement from it.
//
// Teardown runs in t.Cleanup even when a test fails or panics: the nodes
// are killed first (their cleanups were registered later), then the
// namespaces, veths and bridge are deleted and checked gone. Leftovers of
// a test binary that died without cleanup (-timeout) are removed by the
// next run: their names carry a pid that no longer exists. The processes
// themselves die with the test binary (Pdeathsig).
//
// The tests skip (never fail) where they cannot run: -short, not Linux,
// not root, no `ip` or `nft`, or network namespaces / nf_tables not
// available. HATS_NETNS_REQUIRE=1 turns those skips into failures.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	netnsCmdTimeout = 10 * time.Second // one ip/nft command
	netnsRaftPort   = 7000             // ports inside each namespace: its own port space
	netnsHTTPPort   = 8080
	netnsGossipPort = 7946
	netnsTable      = "hatsfault" // nftables table (family inet) in every node namespace
)

// netnsFlags are the Raft timings the real-network tests run with.
var netnsFlags = []string{"--heartbeat-timeout", "300ms", "--election-timeout", "300ms"}

var (
	netnsProbeOnce sync.Once
	netnsProbeErr  error
	netnsLabSeq    atomic.Int64
)

// netnsRequire skips the test unless real network namespaces can be made
// here (or fails it when HATS_NETNS_REQUIRE=1).
func netnsRequire(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netns test: runs real processes in network namespaces (skipped with -short)")
	}
	netnsProbeOnce.Do(func() { netnsProbeErr = netnsProbe() })
	if netnsProbeErr != nil {
		if os.Getenv("HATS_NETNS_REQUIRE") == "1" {
			t.Fatalf("netns test cannot run and HATS_NETNS_REQUIRE=1: %v", netnsProbeErr)
		}
		t.Skipf("netns test skipped: %v", netnsProbeErr)
	}
}

func netnsProbe() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("network namespaces need Linux, this is %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("network namespaces need root (euid %d)", os.Geteuid())
	}
	var err error
	if netnsIP, err = netnsTool("ip"); err != nil {
		return err
	}
	if netnsNFT, err = netnsTool("nft"); err != nil {
		return err
	}
	// The harness's own status requests use net/http's default transport,
	// which honours HTTP_PROXY: requests for the lab's addresses must go
	// straight to the lab, never to a proxy.
	req, err := http.NewRequest(http.MethodGet, "http://10.99.1.11:8080/", nil)
	if err != nil {
		return err
	}
	if u, err := http.ProxyFromEnvironment(req); err != nil || u != nil {
		return fmt.Errorf("an HTTP proxy (%v, %v) is configured for 10.99.0.0/16; add it to NO_PROXY", u, err)
	}
	name := fmt.Sprintf("hats-%d-probe", os.Getpid())
	if out, err := netnsCmd("", netnsIP, "netns", "add", name); err != nil {
		return fmt.Errorf("cannot create a network namespace (ip netns add): %v: %s", err, out)
	}
	defer netnsCmd("", netnsIP, "netns", "del", name)
	if out, err := netnsCmd("", netnsIP, "netns", "exec", name, netnsNFT, "add", "table", "inet", netnsTable); err != nil {
		return fmt.Errorf("nftables does not work inside a namespace: %v: %s", err, out)
	}
	return nil
}

// Paths of the tools, set by netnsProbe.
var netnsIP, netnsNFT string

// netnsTool finds a tool on PATH or in the sbin directories (which a
// root shell's PATH may lack).
func netnsTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH nor in /usr/sbin, /sbin (.ci/run installs iproute2 and nftables)", name)
}

// netnsCmd runs one command (with stdin when non-empty) and returns its
// combined output.
func netnsCmd(stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), netnsCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %v", name, strings.Join(args, " "), netnsCmdTimeout)
	}
	return strings.TrimSpace(string(out)), err
}

// netLab is a bridge and one namespace per node, plus the faults in force.
type netLab struct {
	t      *testing.T
	tag    string // unique per lab: pid-counter
	subnet int    // S in 10.99.S.0/24
	bridge string
	HostIP string // the bridge's address: where the test's clients speak from
	Hosts  []*netHost
	lock   *os.File

	mu   sync.Mutex
	cuts map[[2]int]bool // directed: packets from host i to host j are dropped
}

// netHost is one node namespace.
type netHost struct {
	Index int    // 0-based
	NS    string // namespace name
	IP    string
	veth  string // host end of the veth pair, enslaved to the bridge
	Proc  *Proc  // the node running here, once started
}

// netnsNames matches every name a lab creates, capturing the creator's pid.
var netnsNames = regexp.MustCompile(`^(?:hats-|hb|hv)(\d+)-\d+(?:-n?\d+)?$`)

// newNetLab builds a lab of n namespaces. Cleanup tears it all down.
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	netnsRequire(t)
	netnsSweep(t)
	tag := fmt.Sprintf("%d-%d", os.Getpid(), netnsLabSeq.Add(1))
	l := &netLab{t: t, tag: tag, bridge: "hb" + tag, cuts: map[[2]int]bool{}}
	for i := 0; i < n; i++ {
		h := &netHost{Index: i, NS: fmt.Sprintf("hats-%s-n%d", tag, i+1), veth: fmt.Sprintf("hv%s-%d", tag, i+1)}
		if len(h.veth) > 15 {
			t.Fatalf("interface name %q longer than 15 bytes", h.veth)
		}
		l.Hosts = append(l.Hosts, h)
	}
	t.Cleanup(l.teardown) // registered before anything exists: it tolerates partial setups
	l.claimSubnet()
	l.HostIP = fmt.Sprintf("10.99.%d.1", l.subnet)
	l.must("", netnsIP, "link", "add", l.bridge, "type", "bridge")
	l.must("", netnsIP, "addr", "add", l.HostIP+"/24", "dev", l.bridge)
	l.must("", netnsIP, "link", "set", l.bridge, "up")
	for _, h := range l.Hosts {
		h.IP = fmt.Sprintf("10.99.%d.%d", l.subnet, 11+h.Index)
		peer := fmt.Sprintf("hp%s-%d", tag, h.Index+1)
		l.must("", netnsIP, "netns", "add", h.NS)
		l.must("", netnsIP, "link", "add", h.veth, "type", "veth", "peer", "name", peer)
		l.must("", netnsIP, "link", "set", peer, "netns", h.NS)
		l.must("", netnsIP, "-n", h.NS, "link", "set", peer, "name", "eth0")
		l.must("", netnsIP, "-n", h.NS, "addr", "add", h.IP+"/24", "dev", "eth0")
		l.must("", netnsIP, "-n", h.NS, "link", "set", "eth0", "up")
		l.must("", netnsIP, "-n", h.NS, "link", "set", "lo", "up")
		l.must("", netnsIP, "link", "set", h.veth, "master", l.bridge)
		l.must("", netnsIP, "link", "set", h.veth, "up")
	}
	l.apply()
	var ips []string
	for _, h := range l.Hosts {
		ips = append(ips, h.NS+"="+h.IP)
	}
	t.Logf("netns lab %s: bridge %s %s/24; %s", tag, l.bridge, l.HostIP, strings.Join(ips, " "))
	return l
}

func (l *netLab) must(stdin string, name string, args ...string) string {
	l.t.Helper()
	out, err := netnsCmd(stdin, name, args...)
	if err != nil {
		l.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// claimSubnet picks 10.99.S.0/24 that no host interface or route uses,
// holding an exclusive lock on it for the lab's life.
func (l *netLab) claimSubnet() {
	l.t.Helper()
	dir := netnsLockDir()
	addrs, err := netnsCmd("", netnsIP, "-o", "-4", "addr", "show")
	if err != nil {
		l.t.Fatalf("ip addr: %v: %s", err, addrs)
	}
	routes, err := netnsCmd("", netnsIP, "-o", "-4", "route", "show", "table", "all")
	if err != nil {
		l.t.Fatalf("ip route: %v: %s", err, routes)
	}
	start := (os.Getpid()*7 + int(netnsLabSeq.Load())) % 250
	for i := 0; i < 250; i++ {
		s := 1 + (start+i)%250
		prefix := fmt.Sprintf("10.99.%d.", s)
		if strings.Contains(addrs, " "+prefix) || strings.Contains(routes, prefix) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("hats-netns-10.99.%d.lock", s)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			l.t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		// The holder before us unlinks the file while it holds the lock:
		// ours counts only if the path still names the file we locked.
		var held, now syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &held) != nil || syscall.Stat(f.Name(), &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
			f.Close()
			continue
		}
		l.subnet, l.lock = s, f
		return
	}
	l.t.Fatal("no free subnet in 10.99.1.0 - 10.99.250.0")
}

// teardown deletes everything the lab made (the processes are gone by
// now: their cleanups ran first) and fails the test if anything stays.
func (l *netLab) teardown() {
	for _, h := range l.Hosts {
		if h.Proc != nil {
			h.Proc.setFlags(true, false)
			h.Proc.signal(syscall.SIGKILL)
			h.Proc.waitExit(procExitTimeout)
		}
	}
	for _, h := range l.Hosts {
		netnsCmd("", netnsIP, "netns", "del", h.NS) // also deletes eth0 and so its veth peer
		netnsCmd("", netnsIP, "link", "del", h.veth)
	}
	netnsCmd("", netnsIP, "link", "del", l.bridge)
	if l.lock != nil {
		os.Remove(l.lock.Name()) // while still locked: see claimSubnet
		l.lock.Close()           // releases the flock
	}
	ns, _ := netnsCmd("", netnsIP, "netns", "list")
	links, _ := netnsCmd("", netnsIP, "-o", "link", "show")
	var left []string
	for _, h := range l.Hosts {
		if netnsHasName(ns, h.NS) {
			left = append(left, "netns "+h.NS)
		}
		if netnsHasLink(links, h.veth) {
			left = append(left, "link "+h.veth)
		}
	}
	if netnsHasLink(links, l.bridge) {
		left = append(left, "bridge "+l.bridge)
	}
	if len(left) > 0 {
		l.t.Errorf("netns lab %s: left behind after teardown: %v", l.tag, left)
	}
}

func netnsHasName(list, name string) bool {
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// netnsLinkNames parses `ip -o link show` ("3: name@peer: <...>").
func netnsLinkNames(links string) []string {
	var out []string
	for _, line := range strings.Split(links, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSpace(f[1]), "@")
		out = append(out, name)
	}
	return out
}

func netnsHasLink(links, name string) bool {
	for _, n := range netnsLinkNames(links) {
		if n == name {
			return true
		}
	}
	return false
}

// netnsSweep deletes namespaces and links that a lab of a dead test binary
// left behind (names carry the creator's pid).
func netnsSweep(t *testing.T) {
	dead := func(name string) bool {
		m := netnsNames.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			return false
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist)
	}
	ns, _ := netnsCmd("", netnsIP, "netns", "list")
	for _, line := range strings.Split(ns, "\n") {
		if f := strings.Fields(line); len(f) > 0 && dead(f[0]) {
			t.Logf("removing namespace %s left by a dead test run", f[0])
			netnsCmd("", netnsIP, "netns", "del", f[0])
		}
	}
	links, _ := netnsCmd("", netnsIP, "-o", "link", "show")
	for _, name := range netnsLinkNames(links) {
		if dead(name) {
			t.Logf("removing link %s left by a dead test run", name)
			netnsCmd("", netnsIP, "link", "del", name)
		}
	}
	// Subnet lock files nobody holds (the same protocol as teardown:
	// unlink while locked).
	locks, _ := filepath.Glob(filepath.Join(netnsLockDir(), "hats-netns-10.99.*.lock"))
	for _, path := range locks {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.Remove(path)
		}
		f.Close()
	}
}

// netnsLockDir holds the subnet lock files.
func netnsLockDir() string {
	if st, err := os.Stat("/run/lock"); err == nil && st.IsDir() {
		return "/run/lock"
	}
	return os.TempDir()
}

// ---- faults ----

// apply writes every namespace's filter table from the cut set, one nft
// transaction per namespace.
func (l *netLab) apply() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.Hosts {
		var in, out []string
		for _, o := range l.Hosts {
			if l.cuts[[2]int{h.Index, o.Index}] {
				out = append(out, "ip daddr "+o.IP+" drop")
			}
			if l.cuts[[2]int{o.Index, h.Index}] {
				in = append(in, "ip saddr "+o.IP+" drop")
			}
		}
		script := fmt.Sprintf(`add table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain in {
		type filter hook input priority 0; policy accept;
		%[2]s
	}
	chain out {
		type filter hook output priority 0; policy accept;
		%[3]s
	}
}
`, netnsTable, strings.Join(in, "\n\t\t"), strings.Join(out, "\n\t\t"))
		l.must(script, netnsIP, "netns", "exec", h.NS, netnsNFT, "-f", "-")
	}
}

// Rules returns the filter rules in force in each namespace, for logs.
func (l *netLab) Rules() string {
	var b strings.Builder
	for _, h := range l.Hosts {
		out, err := netnsCmd("", netnsIP, "netns", "exec", h.NS, netnsNFT, "list", "table", "inet", netnsTable)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", h.NS, err)
			continue
		}
		var rules []string
		for _, line := range strings.Split(out, "\n") {
			if line = strings.TrimSpace(line); strings.HasSuffix(line, " drop") {
				rules = append(rules, line)
			}
		}
		fmt.Fprintf(&b, "%s: [%s]\n", h.NS, strings.Join(rules, "; "))
	}
	return b.String()
}

func (l *netLab) host(p *Proc) int {
	l.t.Helper()
	for _, h := range l.Hosts {
		if h.Proc == p {
			return h.Index
		}
	}
	l.t.Fatalf("%s does not run in this lab", p.ID)
	return -1
}

// CutOneWay drops every packet from a to b; b to a still flows. (TCP needs
// both, so a connection in either direction stalls, but b's segments and
// connection attempts still reach a.)
func (l *netLab) CutOneWay(a, b *Proc) {
	l.mu.Lock()
	l.cuts[[2]int{l.host(a), l.host(b)}] = true
	l.mu.Unlock()
	l.apply()
}

// Cut drops every packet between a and b, both ways.
func (l *netLab) Cut(a, b *Proc) {
	l.mu.Lock()
	l.cuts[[2]int{l.host(a), l.host(b)}] = true
	l.cuts[[2]int{l.host(b), l.host(a)}] = true
	l.mu.Unlock()
	l.apply()
}

// Isolate cuts p from every other node, both ways (not from the test's
// clients).
func (l *netLab) Isolate(p *Proc) {
	i := l.host(p)
	l.mu.Lock()
	for _, o := range l.Hosts {
		if o.Index != i {
			l.cuts[[2]int{i, o.Index}] = true
			l.cuts[[2]int{o.Index, i}] = true
		}
	}
	l.mu.Unlock()
	l.apply()
}

// Partition cuts every link between nodes of different groups, both ways.
func (l *netLab) Partition(groups ...[]*Proc) {
	group := map[int]int{}
	for g, ps := range groups {
		for _, p := range ps {
			group[l.host(p)] = g
		}
	}
	l.mu.Lock()
	for a, ga := range group {
		for b, gb := range group {
			if ga != gb {
				l.cuts[[2]int{a, b}] = true
			}
		}
	}
	l.mu.Unlock()
	l.apply()
}

// Heal removes every cut.
func (l *netLab) Heal() {
	l.mu.Lock()
	l.cuts = map[[2]int]bool{}
	l.mu.Unlock()
	l.apply()
}

// ---- processes ----

// StartCluster starts one `hats node` per namespace: n1 bootstraps and each
// other node joins the ones before it. The result is an ordinary
// ProcCluster (Leader, WaitReady, WaitSame, Client, Kill, Stop, Cont all
// work as on loopback); restarts go through lab.Start.
func (l *netLab) StartCluster(extra ...string) *ProcCluster {
	l.t.Helper()
	hatsBinary(l.t)
	dir := l.t.TempDir()
	pc := &ProcCluster{t: l.t, dir: dir, Extra: extra}
	for _, h := range l.Hosts {
		var join []string
		for _, o := range pc.Nodes {
			join = append(join, o.HTTPAddr)
		}
		flags := append([]string{"--gossip-addr", fmt.Sprintf("%s:%d", h.IP, netnsGossipPort)}, extra...)
		p := NewProc(l.t, dir, fmt.Sprintf("n%d", h.Index+1), join, flags...)
		p.RaftAddr = fmt.Sprintf("%s:%d", h.IP, netnsRaftPort)
		p.HTTPAddr = fmt.Sprintf("%s:%d", h.IP, netnsHTTPPort)
		h.Proc = p
		pc.Nodes = append(pc.Nodes, p)
		l.Start(p)
		pc.WaitReady()
	}
	return pc
}

// Start starts (or restarts, with the same data dir, addresses and flags)
// a node inside its namespace and waits until its API answers.
func (l *netLab) Start(p *Proc) {
	l.t.Helper()
	if p.Running() {
		l.t.Fatalf("start %s: already running", p.ID)
	}
	ns := l.Hosts[l.host(p)].NS
	var err error
	for i := 0; i < procBindAttempts; i++ {
		if err = netnsStartOnce(p, ns); !errors.Is(err, errBindRace) {
			break
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	if err != nil {
		l.t.Fatalf("start %s in %s: %v", p.ID, ns, err)
	}
}

// netnsStartOnce is Proc.startOnce with the binary run by `ip netns exec`
// (which execs it: the pid we signal is the node's own).
func netnsStartOnce(p *Proc, ns string) error {
	return p.launch(func(bin string, args []string) (string, []string) {
		return netnsIP, append([]string{"netns", "exec", ns, bin}, args...)
	})
}

// ---- observation ----

// netnsLeaderAmong waits until exactly one of nodes leads and all of them
// name it, and returns it.
func netnsLeaderAmong(t testing.TB, timeout time.Duration, nodes ...*Proc) *Proc {
	t.Helper()
	var leader *Proc
	Poll(t, timeout, "a leader among "+netnsIDs(nodes), func() error {
		leader = nil
		views := map[string]string{}
		for _, p := range nodes {
			st, err := statusOf(p)
			if err != nil {
				return err
			}
			views[p.ID] = st.State + "/" + st.Leader
			if st.State == "Leader" {
				if leader != nil {
					return fmt.Errorf("two leaders: %v", views)
				}
				leader = p
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader: %v", views)
		}
		for _, p := range nodes {
			if !strings.HasSuffix(views[p.ID], "/"+leader.ID) {
				return fmt.Errorf("not agreed: %v", views)
			}
		}
		return nil
	})
	return leader
}

func netnsIDs(ps []*Proc) string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	return "{" + strings.Join(ids, ",") + "}"
}

func netnsExcept(all []*Proc, except ...*Proc) []*Proc {
	var out []*Proc
outer:
	for _, p := range all {
		for _, e := range except {
			if p == e {
				continue outer
			}
		}
		out = append(out, p)
	}
	return out
}
