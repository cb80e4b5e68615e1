package cluster_test

// Process tests: the real `hats` binary, built once, run as separate
// processes on 127.0.0.1 and killed, stopped, terminated and restarted with
// signals. Nothing here reaches into a node; everything goes through the
// HTTP API and the command line, as an operator's would.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

// Bounds of the process harness. They are generous: a loaded 2-core
// machine runs three nodes, a race-instrumented test binary and the CLI.
const (
	procStartTimeout = 30 * time.Second // a process binds its ports and serves
	procReadyTimeout = 30 * time.Second // a cluster agrees on a leader and converges
	procExitTimeout  = 15 * time.Second // a signalled process is gone
	procBindAttempts = 5                // fresh ports tried when a bind loses a race
	procLogTail      = 64 << 10         // bytes of each log dumped on failure
)

var (
	hatsBinOnce sync.Once
	hatsBinDir  string
	hatsBinPath string
	hatsBinErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	procKillAll()
	if hatsBinDir != "" {
		os.RemoveAll(hatsBinDir)
	}
	os.Exit(code)
}

// hatsBinary builds the hats binary once per test run (skipping the test
// under -short) and returns its path.
func hatsBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("process test: builds and runs the hats binary (skipped with -short)")
	}
	hatsBinOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			hatsBinErr = err
			return
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			hatsBinErr = fmt.Errorf("repository root not found above %s: %v", root, err)
			return
		}
		dir, err := os.MkdirTemp("", "hats-bin-")
		if err != nil {
			hatsBinErr = err
			return
		}
		hatsBinDir = dir
		out := filepath.Join(dir, "hats")
		goTool := "go"
		if p, err := exec.LookPath("go"); err == nil {
			goTool = p
		}
		cmd := exec.Command(goTool, "build", "-o", out, ".")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			hatsBinErr = fmt.Errorf("go build -o %s . (in %s): %v\n%s", out, root, err, b)
			return
		}
		hatsBinPath = out
	})
	if hatsBinErr != nil {
		t.Fatal(hatsBinErr)
	}
	return hatsBinPath
}

// hatsEnv is the environment of a hats child: ours without any HATS_*
// variable (a stray HATS_JOIN or HATS_SESSION would change what a test
// means), plus extra.
func hatsEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HATS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// procAttr asks Linux to SIGKILL the child if the test binary dies (say on
// a -timeout panic, when no cleanup runs). Pdeathsig exists only on some
// systems, so it is set by name.
func procAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}

// Every child process ever started, so TestMain can kill stragglers.
var procAll struct {
	sync.Mutex
	cmds []*exec.Cmd
}

func procTrack(cmd *exec.Cmd) {
	procAll.Lock()
	procAll.cmds = append(procAll.cmds, cmd)
	procAll.Unlock()
}

func procKillAll() {
	procAll.Lock()
	defer procAll.Unlock()
	for _, c := range procAll.cmds {
		if c.Process != nil {
			_ = c.Process.Kill() // an already-reaped process just errors
		}
	}
}

// Ports handed out by procFreeAddr in this test binary, never handed twice.
var procPorts struct {
	sync.Mutex
	used map[string]bool
}

// procFreeAddr returns a loopback address nothing listens on right now. The
// port is released before the child binds it, so a bind can still lose a
// race; starters retry with fresh ports when it does.
func procFreeAddr(t testing.TB) string {
	t.Helper()
	procPorts.Lock()
	defer procPorts.Unlock()
	if procPorts.used == nil {
		procPorts.used = map[string]bool{}
	}
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !procPorts.used[addr] {
			procPorts.used[addr] = true
			return addr
		}
	}
	t.Fatal("no free loopback port after 100 tries")
	return ""
}

// hatsRun is the outcome of one hats command run to completion.
type hatsRun struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int
	Took   time.Duration
}

func (r hatsRun) String() string {
	return fmt.Sprintf("hats %s: exit %d after %v\nstdout: %s\nstderr: %s",
		strings.Join(r.Args, " "), r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// runHats runs hats with args to completion, killing it after timeout
// (which fails the test).
func runHats(t testing.TB, timeout time.Duration, env []string, stdin string, args ...string) hatsRun {
	t.Helper()
	bin := hatsBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = procAttr()
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hats %s: %v", strings.Join(args, " "), err)
	}
	procTrack(cmd)
	err := cmd.Wait()
	r := hatsRun{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("still running after %v, killed: %s", timeout, r)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("hats %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// Proc is one `hats node` process. Its address, data dir and flags stay
// the same across restarts.
type Proc struct {
	t        testing.TB
	ID       string
	Dir      string // data dir
	RaftAddr string
	HTTPAddr string
	Join     []string // HTTP addresses given with --join
	Extra    []string // more flags, e.g. timing
	// HTTPS, when set, is how the harness reaches a node started with
	// TLS flags in Extra (it then runs without --insecure).
	HTTPS  *http.Client
	stdout string // log file paths; every run appends
	stderr string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current run has exited
	runs     int
	wantDown bool // killed or terminated on purpose
	stopped  bool // SIGSTOPped
}

// Args is the command line (after the binary) of the node.
func (p *Proc) Args() []string {
	a := []string{"node", "--id", p.ID, "--data-dir", p.Dir, "--raft-addr", p.RaftAddr, "--http-addr", p.HTTPAddr}
	if p.HTTPS == nil {
		a = append(a, "--insecure")
	}
	for _, j := range p.Join {
		a = append(a, "--join", j)
	}
	return append(a, p.Extra...)
}

// NewProc prepares (but does not start) a node whose data and logs live
// under dir. Cleanup kills it and, when the test failed, logs its output.
func NewProc(t testing.TB, dir, id string, join []string, extra ...string) *Proc {
	t.Helper()
	p := &Proc{
		t: t, ID: id, Dir: filepath.Join(dir, id),
		Join: join, Extra: extra,
		stdout: filepath.Join(dir, id+".stdout"), stderr: filepath.Join(dir, id+".stderr"),
	}
	t.Cleanup(func() {
		p.setFlags(true, false)
		p.signal(syscall.SIGKILL)
		p.waitExit(procExitTimeout)
		if t.Failed() {
			p.dumpLogs()
		}
	})
	return p
}

// errBindRace marks a start that lost its port to someone else.
var errBindRace = errors.New("address already in use")

// Start starts a fresh node on new ports, choosing others when a bind
// loses a race, and waits until its API answers.
func (p *Proc) Start() {
	p.t.Helper()
	var err error
	for i := 0; i < procBindAttempts; i++ {
		p.RaftAddr, p.HTTPAddr = procFreeAddr(p.t), procFreeAddr(p.t)
		if err = p.startOnce(); !errors.Is(err, errBindRace) {
			break
		}
	}
	if err != nil {
		p.t.Fatalf("start %s: %v", p.ID, err)
	}
}

// Restart starts the node again with the same arguments and data dir. It
// must not be running.
func (p *Proc) Restart() {
	p.t.Helper()
	if p.Running() {
		p.t.Fatalf("restart %s: still running", p.ID)
	}
	var err error
	for i := 0; i < procBindAttempts; i++ {
		if err = p.startOnce(); !errors.Is(err, errBindRace) {
			break
		}
		// The same ports are needed; whoever holds one now is likely a
		// short-lived outgoing connection.
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("restart %s: %v", p.ID, err)
	}
}

func (p *Proc) startOnce() error {
	return p.launch(func(bin string, args []string) (string, []string) { return bin, args })
}

// launch starts the node once; wrap turns the binary and its arguments into
// the command actually run (netns tests prefix `ip netns exec NS`).
func (p *Proc) launch(wrap func(bin string, args []string) (string, []string)) error {
	bin := hatsBinary(p.t)
	open := func(path string) (*os.File, error) {
		return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	so, err := open(p.stdout)
	if err != nil {
		return err
	}
	defer so.Close()
	se, err := open(p.stderr)
	if err != nil {
		return err
	}
	defer se.Close()
	p.mu.Lock()
	p.runs++
	run := p.runs
	p.wantDown, p.stopped = false, false
	p.mu.Unlock()
	name, args := wrap(bin, p.Args())
	fmt.Fprintf(se, "=== run %d: %s %s\n", run, name, strings.Join(args, " "))
	off, err := se.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}

	cmd := exec.Command(name, args...)
	cmd.Env = hatsEnv()
	cmd.Stdout, cmd.Stderr = so, se // files: the child writes them directly
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	procTrack(cmd)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	// Wait until the API answers or the process exits.
	deadline := time.Now().Add(procStartTimeout)
	for i := 0; ; i++ {
		select {
		case <-done:
			out := p.stderrSince(off)
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w: %s", errBindRace, strings.TrimSpace(out))
			}
			return fmt.Errorf("exited with status %d before serving: %s", cmd.ProcessState.ExitCode(), strings.TrimSpace(out))
		default:
		}
		if p.get("/livez", nil) == nil {
			return nil
		}
		if time.Now().After(deadline) || i > 10000 {
			return fmt.Errorf("API at %s not answering after %v", p.HTTPAddr, procStartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// current returns the latest run's command and exit channel.
func (p *Proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// Running reports whether the process is alive (stopped counts as alive).
func (p *Proc) Running() bool {
	_, done := p.current()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func (p *Proc) signal(sig os.Signal) {
	cmd, _ := p.current()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig) // "process already finished" is fine
	}
}

// waitExit waits for the current run to end; it returns its exit code, or
// false on timeout.
func (p *Proc) waitExit(timeout time.Duration) (int, bool) {
	cmd, done := p.current()
	if done == nil {
		return 0, true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode(), true
	case <-t.C:
		return 0, false
	}
}

func (p *Proc) setFlags(wantDown, stopped bool) {
	p.mu.Lock()
	p.wantDown, p.stopped = wantDown, stopped
	p.mu.Unlock()
}

// Live reports whether the process runs and is not stopped.
func (p *Proc) Live() bool {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	return !stopped && p.Running()
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	p.t.Helper()
	p.setFlags(true, false)
	p.signal(syscall.SIGKILL)
	if _, ok := p.waitExit(procExitTimeout); !ok {
		p.t.Fatalf("%s: still running %v after SIGKILL", p.ID, procExitTimeout)
	}
}

// Term sends SIGTERM; see WaitExit.
func (p *Proc) Term() {
	p.setFlags(true, false)
	p.signal(syscall.SIGTERM)
}

// Stop freezes the process (SIGSTOP): its sockets stay open but nothing
// answers, like a machine that hangs.
func (p *Proc) Stop() {
	p.setFlags(false, true)
	p.signal(syscall.SIGSTOP)
}

// Cont resumes a stopped process (SIGCONT).
func (p *Proc) Cont() {
	p.signal(syscall.SIGCONT)
	p.setFlags(false, false)
}

// WaitExit waits for the process to exit and returns its status; it fails
// the test after timeout.
func (p *Proc) WaitExit(timeout time.Duration) int {
	p.t.Helper()
	code, ok := p.waitExit(timeout)
	if !ok {
		p.t.Fatalf("%s: still running after %v", p.ID, timeout)
	}
	return code
}

// Stderr returns everything the node wrote to stderr, all runs included.
func (p *Proc) Stderr() string {
	b, _ := os.ReadFile(p.stderr)
	return string(b)
}

func (p *Proc) stderrSince(off int64) string {
	b, _ := os.ReadFile(p.stderr)
	if off > int64(len(b)) {
		return string(b)
	}
	return string(b[off:])
}

func (p *Proc) dumpLogs() {
	for _, f := range []struct{ name, path string }{{"stdout", p.stdout}, {"stderr", p.stderr}} {
		b, err := os.ReadFile(f.path)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		if len(b) > procLogTail {
			b = append([]byte("...\n"), b[len(b)-procLogTail:]...)
		}
		p.t.Logf("---- %s %s (%s) ----\n%s", p.ID, f.name, p.HTTPAddr, b)
	}
}

// ProcCluster is a set of `hats node` processes on loopback.
type ProcCluster struct {
	t     testing.TB
	dir   string
	Extra []string // flags every node gets
	Nodes []*Proc
}

// procFast is Raft timing for tests that measure failover.
var procFast = []string{"--heartbeat-timeout", "200ms", "--election-timeout", "200ms"}

// NewProcCluster starts n nodes: n1 bootstraps, each other one joins the
// nodes before it. It returns once all agree on a leader and hold the same
// state.
func NewProcCluster(t testing.TB, n int, extra ...string) *ProcCluster {
	t.Helper()
	hatsBinary(t)
	pc := &ProcCluster{t: t, dir: t.TempDir(), Extra: extra}
	for i := 0; i < n; i++ {
		pc.AddNode()
	}
	pc.WaitReady()
	return pc
}

// AddNode starts a new node that joins every live one (n1 bootstraps).
func (pc *ProcCluster) AddNode() *Proc {
	pc.t.Helper()
	var join []string
	for _, o := range pc.Live() {
		join = append(join, o.HTTPAddr)
	}
	p := NewProc(pc.t, pc.dir, fmt.Sprintf("n%d", len(pc.Nodes)+1), join, pc.Extra...)
	pc.Nodes = append(pc.Nodes, p)
	p.Start()
	pc.WaitReady()
	return p
}

// Live returns the nodes that run and are not stopped.
func (pc *ProcCluster) Live() []*Proc {
	var out []*Proc
	for _, p := range pc.Nodes {
		if p.Live() {
			out = append(out, p)
		}
	}
	return out
}

// failOnCrash fails the test at once when a node exited that no one
// killed or terminated, rather than letting a wait run out.
func (pc *ProcCluster) failOnCrash() {
	pc.t.Helper()
	for _, p := range pc.Nodes {
		p.mu.Lock()
		down, runs := p.wantDown, p.runs
		p.mu.Unlock()
		if runs > 0 && !down && !p.Running() {
			pc.t.Fatalf("%s exited unexpectedly", p.ID)
		}
	}
}

// Node returns the node with the given ID.
func (pc *ProcCluster) Node(id string) *Proc {
	pc.t.Helper()
	for _, p := range pc.Nodes {
		if p.ID == id {
			return p
		}
	}
	pc.t.Fatalf("no node %q", id)
	return nil
}

// Addrs lists the HTTP addresses of the given nodes (all when none given).
func (pc *ProcCluster) Addrs(nodes ...*Proc) []string {
	if len(nodes) == 0 {
		nodes = pc.Nodes
	}
	var out []string
	for _, p := range nodes {
		out = append(out, p.HTTPAddr)
	}
	return out
}

// Client returns an API client for the given nodes (all when none given).
func (pc *ProcCluster) Client(nodes ...*Proc) *transport.Client {
	pc.t.Helper()
	cl, err := transport.NewClient(transport.ClientConfig{Nodes: pc.Addrs(nodes...), Timeout: 3 * time.Second, Deadline: 20 * time.Second})
	if err != nil {
		pc.t.Fatal(err)
	}
	return cl
}

// procHTTP makes the harness's own one-shot requests (readiness, status).
var procHTTP = &http.Client{Timeout: 2 * time.Second}

// procGet sends GET path to addr, in one attempt, and decodes a 200 answer
// into out (when non-nil).
func procGet(addr, path string, out any) error {
	return getJSON(procHTTP, "http://"+addr, path, out)
}

// get is procGet for this node, over https when it serves TLS.
func (p *Proc) get(path string, out any) error {
	if p.HTTPS == nil {
		return procGet(p.HTTPAddr, path, out)
	}
	return getJSON(p.HTTPS, "https://"+p.HTTPAddr, path, out)
}

func getJSON(hc *http.Client, base, path string, out any) error {
	addr := base
	resp, err := hc.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s%s: %s: %s", addr, path, resp.Status, bytes.TrimSpace(body))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	return nil
}

// statusOf asks one node for its own status, in one attempt.
func statusOf(p *Proc) (*transport.NodeStatus, error) {
	var st transport.NodeStatus
	if err := p.get("/v1/status", &st); err != nil {
		return nil, fmt.Errorf("%s: %w", p.ID, err)
	}
	return &st, nil
}

// Leader waits until the live nodes agree on one leader among them and
// returns it.
func (pc *ProcCluster) Leader() *Proc {
	pc.t.Helper()
	var leader *Proc
	Poll(pc.t, procReadyTimeout, "live nodes agree on one leader", func() error {
		leader = nil
		live := pc.Live()
		if len(live) == 0 {
			return errors.New("no live node")
		}
		var leaders []string
		seen := map[string]string{}
		for _, p := range live {
			st, err := statusOf(p)
			if err != nil {
				return err
			}
			seen[p.ID] = st.Leader
			if st.State == "Leader" {
				leaders = append(leaders, p.ID)
				leader = p
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders %v; each node's view %v", leaders, seen)
		}
		for id, l := range seen {
			if l != leader.ID {
				return fmt.Errorf("%s thinks the leader is %q, not %s", id, l, leader.ID)
			}
		}
		return nil
	})
	return leader
}

// WaitReady waits until the live nodes agree on a leader, every one
// answers /readyz, the leader's cluster status lists every node with the
// live ones reachable, and all hold the same state.
func (pc *ProcCluster) WaitReady() {
	pc.t.Helper()
	leader := pc.Leader()
	Poll(pc.t, procReadyTimeout, "every live node ready and listed", func() error {
		pc.failOnCrash()
		for _, p := range pc.Live() {
			if err := p.get("/readyz", nil); err != nil {
				return fmt.Errorf("%s: %w", p.ID, err)
			}
		}
		var st transport.ClusterStatus
		if err := leader.get("/v1/cluster/status", &st); err != nil {
			return err
		}
		members := map[string]transport.NodeStatus{}
		for _, n := range st.Nodes {
			members[n.ID] = n
		}
		for _, p := range pc.Nodes {
			m, ok := members[p.ID]
			switch {
			case !ok:
				return fmt.Errorf("%s not a member yet: %+v", p.ID, st.Nodes)
			case m.RaftAddr != p.RaftAddr || m.HTTPAddr != p.HTTPAddr:
				return fmt.Errorf("%s listed at %s/%s, runs at %s/%s", p.ID, m.RaftAddr, m.HTTPAddr, p.RaftAddr, p.HTTPAddr)
			case p.Live() && (m.State == "unreachable" || !m.Voter):
				return fmt.Errorf("%s listed as %s (voter %v): %s", p.ID, m.State, m.Voter, m.Error)
			}
		}
		return nil
	})
	pc.WaitSame()
}

// WaitSame waits until every live node reports the same state hash at the
// same applied index, and returns them.
func (pc *ProcCluster) WaitSame() (hash string, index uint64) {
	pc.t.Helper()
	Poll(pc.t, procReadyTimeout, "same state hash at the same index on every live node", func() error {
		hash, index = "", 0
		var views []string
		for i, p := range pc.Live() {
			// A fresh hash: a cached one (up to 1 s old) can stay one
			// Market Engine tick behind the applied index poll after poll.
			var st transport.NodeStatus
			if err := p.get("/v1/status?fresh=true", &st); err != nil {
				return fmt.Errorf("%s: %w", p.ID, err)
			}
			views = append(views, fmt.Sprintf("%s=%s@%d(applied %d)", p.ID, st.StateHash, st.HashIndex, st.AppliedIndex))
			if st.StateHash == "" || st.HashIndex != st.AppliedIndex {
				return fmt.Errorf("%s still moving: %v", p.ID, views)
			}
			if i == 0 {
				hash, index = st.StateHash, st.HashIndex
			} else if st.StateHash != hash || st.HashIndex != index {
				return fmt.Errorf("differ: %v", views)
			}
		}
		return nil
	})
	return hash, index
}

// cents parses an API money string.
func cents(t testing.TB, s string) int64 {
	t.Helper()
	c, err := trader.ParseCents(s)
	if err != nil {
		t.Fatalf("money %q: %v", s, err)
	}
	return int64(c)
}

func fmtCents(c int64) string { return trader.Cents(c).String() }

// procTrader registers and logs in a trader through cl.
func procTrader(t testing.TB, cl *transport.Client, name string) *transport.LoginResponse {
	t.Helper()
	ctx := context.Background()
	if _, err := cl.Register(ctx, transport.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	lr, err := cl.Login(ctx, name, "password-"+name)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return lr
}

// accountCash reads the trader's balance in cents at the given consistency.
func accountCash(t testing.TB, cl *transport.Client, c transport.Consistency) int64 {
	t.Helper()
	a, err := cl.Account(context.Background(), c)
	if err != nil {
		t.Fatalf("account (%s): %v", c, err)
	}
	if a.Cash != a.AvailableCash {
		t.Fatalf("cash %s but available %s with no open orders", a.Cash, a.AvailableCash)
	}
	return cents(t, a.Cash)
}

// deposit outcomes.
type depOutcome int

const (
	depAcked depOutcome = iota
	depFailed
	depUnknown
)

type depRecord struct {
	worker   int
	key      string
	amount   string
	cents    int64
	start    time.Time
	end      time.Time
	outcome  depOutcome
	replayed bool // the acknowledgement was a stored result
	resolved bool // the outcome was unknown, then learned by a retry
	err      error
}

func TestProcess_KillLeaderUnderDeposits(t *testing.T) {
	pc := NewProcCluster(t, 3, procFast...)
	setup := pc.Client()
	lr := procTrader(t, setup, "kim")
	token := lr.Token

	const (
		workers      = 4
		maxPerWorker = 1000            // hard cap on one depositor's deposits
		afterKill    = 100             // each depositor stops after this many deposits sent after the kill
		runFor       = 6 * time.Second // ... or after this long
		killAfter    = time.Second
	)
	var (
		mu      sync.Mutex
		records []*depRecord
		wg      sync.WaitGroup
		killAt  atomic.Int64 // unix nanoseconds; 0 until the kill
	)
	start := time.Now()
	stopAt := start.Add(runFor)
	for w := 0; w < workers; w++ {
		// Depositor 0 is impatient: its calls give up after half a second,
		// so those in flight during the failover end with unknown outcomes
		// (or definite failures) that must be resolved (or never applied).
		cfg := transport.ClientConfig{Nodes: pc.Addrs(), Token: token, Timeout: 3 * time.Second, Deadline: 10 * time.Second}
		if w == 0 {
			cfg.Timeout, cfg.Deadline = 400*time.Millisecond, 500*time.Millisecond
		}
		cl, err := transport.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(w int, cl *transport.Client) {
			defer wg.Done()
			sentAfterKill := 0
			for i := 0; i < maxPerWorker && sentAfterKill < afterKill && time.Now().Before(stopAt); i++ {
				if killAt.Load() != 0 {
					sentAfterKill++
				}
				c := int64(100 + (w*37+i*11)%100) // 1.00 to 1.99
				r := &depRecord{worker: w, key: transport.NewIdempotencyKey(), amount: fmtCents(c), cents: c, start: time.Now()}
				a, err := cl.Deposit(context.Background(), r.amount, r.key)
				r.end = time.Now()
				switch {
				case err == nil:
					r.outcome, r.replayed = depAcked, a.Replayed
				case errors.Is(err, transport.ErrOutcomeUnknown):
					r.outcome, r.err = depUnknown, err
				default:
					r.outcome, r.err = depFailed, err
				}
				mu.Lock()
				records = append(records, r)
				mu.Unlock()
			}
		}(w, cl)
	}

	// After a second of traffic, SIGKILL whoever leads then.
	old := pc.Leader()
	for i := 0; i < 1000 && time.Since(start) < killAfter; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if l := pc.Leader(); l != old {
		t.Logf("leadership moved from %s to %s before the kill", old.ID, l.ID)
		old = l
	}
	mu.Lock()
	done := len(records)
	mu.Unlock()
	kill := time.Now()
	killAt.Store(kill.UnixNano())
	old.Kill()
	t.Logf("SIGKILLed leader %s after %d deposits", old.ID, done)
	wg.Wait()

	// Tally.
	var acked, failed, unknown, replayedAcks, spanning int
	var firstFreshAck, longestStall time.Duration = -1, 0
	for _, r := range records {
		switch r.outcome {
		case depAcked:
			acked++
			if r.replayed {
				replayedAcks++
			}
			if r.start.After(kill) && (firstFreshAck < 0 || r.end.Sub(kill) < firstFreshAck) {
				firstFreshAck = r.end.Sub(kill)
			}
		case depFailed:
			failed++
			t.Logf("deposit %s failed definitely: %v", r.key, r.err)
		case depUnknown:
			unknown++
			t.Logf("deposit %s outcome unknown: %v", r.key, r.err)
		}
		if r.start.Before(kill) && r.end.After(kill) {
			spanning++
			longestStall = max(longestStall, r.end.Sub(kill))
		}
	}
	t.Logf("%d deposits in %v: %d acked (%d of them replays of an earlier try), %d failed, %d unknown",
		len(records), time.Since(start).Round(time.Millisecond), acked, replayedAcks, failed, unknown)
	if firstFreshAck < 0 {
		t.Fatal("no deposit sent after the kill was acknowledged")
	}
	t.Logf("SIGKILL -> first ack of a deposit sent after it: %v; %d deposits in flight at the kill finished within %v of it",
		firstFreshAck.Round(time.Millisecond), spanning, longestStall.Round(time.Millisecond))

	// The two survivors lead on; what is applied now is final.
	pc.WaitReady()
	resolver := pc.Client(pc.Live()...)
	resolver.SetToken(token)
	var sumAcked int64
	for _, r := range records {
		if r.outcome == depAcked {
			sumAcked += r.cents
		}
	}
	balBefore := accountCash(t, resolver, transport.Linearizable)

	// Resolve every unknown outcome by asking again with the same key.
	var replayedRes int64
	for _, r := range records {
		if r.outcome != depUnknown {
			continue
		}
		var a *transport.Account
		var err error
		for i := 0; i < 5; i++ {
			if a, err = resolver.Deposit(context.Background(), r.amount, r.key); !errors.Is(err, transport.ErrOutcomeUnknown) {
				break
			}
		}
		if err != nil {
			t.Fatalf("deposit %s still not definite after the cluster recovered: %v", r.key, err)
		}
		r.outcome, r.resolved, r.replayed = depAcked, true, a.Replayed
		sumAcked += r.cents
		if a.Replayed {
			replayedRes += r.cents
		}
		t.Logf("deposit %s resolved: replayed=%v", r.key, a.Replayed)
	}
	// Unknowns that had been applied were already in the balance, and only
	// they may come back as replays.
	var freshRes int64
	for _, r := range records {
		if r.resolved && !r.replayed {
			freshRes += r.cents
		}
	}
	if got, want := balBefore, sumAcked-freshRes; got != want {
		t.Fatalf("balance before resolving = %s, want %s (acked %s, of which resolved as replays %s, fresh %s)",
			fmtCents(got), fmtCents(want), fmtCents(sumAcked), fmtCents(replayedRes), fmtCents(freshRes))
	}

	// The killed node comes back and catches up.
	old.Restart()
	pc.WaitReady()
	if got := accountCash(t, resolver, transport.Linearizable); got != sumAcked {
		t.Fatalf("final balance %s, want %s: the sum of every acknowledged deposit", fmtCents(got), fmtCents(sumAcked))
	}
	hash, idx := pc.WaitSame()
	for _, p := range pc.Nodes {
		cl := pc.Client(p)
		cl.SetToken(token)
		if got := accountCash(t, cl, transport.Stale); got != sumAcked {
			t.Fatalf("%s (stale read) has %s, want %s", p.ID, fmtCents(got), fmtCents(sumAcked))
		}
	}
	t.Logf("all 3 nodes at index %d with state hash %s; balance %s", idx, hash, fmtCents(sumAcked))
}

func TestProcess_SIGTERM_LeaderHandsOver(t *testing.T) {
	pc := NewProcCluster(t, 3)
	cl := pc.Client()
	lr := procTrader(t, cl, "sam")
	ctx := context.Background()
	if _, err := cl.Deposit(ctx, "10.00", ""); err != nil {
		t.Fatal(err)
	}
	old := pc.Leader()
	start := time.Now()
	old.Term()
	code := old.WaitExit(procExitTimeout)
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("%s exited with status %d after SIGTERM, want 0", old.ID, code)
	}
	if strings.Contains(old.Stderr(), "panic") {
		t.Fatalf("%s panicked on SIGTERM", old.ID)
	}
	nl := pc.Leader()
	if nl == old {
		t.Fatal("no new leader")
	}
	t.Logf("%s exited 0 %v after SIGTERM; %s leads (%v after SIGTERM)", old.ID, took.Round(time.Millisecond), nl.ID, time.Since(start).Round(time.Millisecond))
	if _, err := cl.Deposit(ctx, "5.00", ""); err != nil {
		t.Fatalf("deposit after hand-over: %v", err)
	}
	if got := accountCash(t, cl, transport.Linearizable); got != 1500 {
		t.Fatalf("balance %s, want 15.00", fmtCents(got))
	}
	// The stopped node comes back as a follower with everything.
	old.Restart()
	pc.WaitReady()
	other := pc.Client(old)
	other.SetToken(lr.Token)
	if got := accountCash(t, other, transport.Stale); got != 1500 {
		t.Fatalf("restarted %s has %s, want 15.00", old.ID, fmtCents(got))
	}
}

func TestProcess_RestartNeverRebootstraps(t *testing.T) {
	ctx := context.Background()
	t.Run("single", func(t *testing.T) {
		pc := NewProcCluster(t, 1)
		n1 := pc.Nodes[0]
		cl := pc.Client()
		lr := procTrader(t, cl, "rita")
		if _, err := cl.Deposit(ctx, "42.42", ""); err != nil {
			t.Fatal(err)
		}
		st1, err := statusOf(n1)
		if err != nil {
			t.Fatal(err)
		}
		n1.Kill()
		n1.Restart()
		pc.WaitReady()
		st2, err := statusOf(n1)
		if err != nil {
			t.Fatal(err)
		}
		if st2.AppliedIndex < st1.AppliedIndex || st2.Term < st1.Term {
			t.Fatalf("restarted at index %d term %d, was at %d term %d", st2.AppliedIndex, st2.Term, st1.AppliedIndex, st1.Term)
		}
		if strings.Count(n1.Stderr(), "=== run") != 2 {
			t.Fatalf("expected two runs in the log")
		}
		// The old session still works: same state, not a new cluster.
		// (Stale: what the restarted node holds. A linearizable read is
		// checked by TestProcess_LinearizableReadAfterElection.)
		a, err := cl.Account(ctx, transport.Stale)
		if err != nil {
			t.Fatalf("account with the pre-crash session: %v", err)
		}
		if a.Cash != "42.42" || a.AccountID != lr.Account.AccountID || a.CreatedAt != lr.Account.CreatedAt {
			t.Fatalf("after restart: %+v, before: %+v", a, lr.Account)
		}
		if _, err := cl.Deposit(ctx, "0.58", ""); err != nil {
			t.Fatal(err)
		}
		if got := accountCash(t, cl, transport.Linearizable); got != 4300 {
			t.Fatalf("balance %s, want 43.00", fmtCents(got))
		}
		st, err := cl.ClusterStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Nodes) != 1 || st.Nodes[0].ID != n1.ID {
			t.Fatalf("cluster after restart: %+v", st.Nodes)
		}
	})
	t.Run("three_all_killed", func(t *testing.T) {
		pc := NewProcCluster(t, 3)
		cl := pc.Client()
		lr := procTrader(t, cl, "ravi")
		for i := 0; i < 10; i++ {
			if _, err := cl.Deposit(ctx, "1.10", ""); err != nil {
				t.Fatal(err)
			}
		}
		hash, idx := pc.WaitSame()
		for _, p := range pc.Nodes {
			p.Kill()
		}
		// All three come back with the same arguments, n2 and n3 with
		// their original --join.
		for _, p := range pc.Nodes {
			p.Restart()
		}
		pc.WaitReady()
		hash2, idx2 := pc.WaitSame()
		if idx2 < idx || (idx2 == idx && hash2 != hash) {
			t.Fatalf("state after restart %s@%d, before %s@%d", hash2, idx2, hash, idx)
		}
		a, err := cl.Account(ctx, transport.Stale)
		if err != nil {
			t.Fatalf("account with the pre-crash session: %v", err)
		}
		if a.Cash != "11.00" || a.AccountID != lr.Account.AccountID {
			t.Fatalf("after restart: %+v", a)
		}
		st, err := cl.ClusterStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, n := range st.Nodes {
			ids = append(ids, n.ID)
		}
		sort.Strings(ids)
		if strings.Join(ids, ",") != "n1,n2,n3" {
			t.Fatalf("members after restart: %v", ids)
		}
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			t.Fatalf("deposit after full restart: %v", err)
		}
		pc.WaitSame()
	})
}

// A leader that hangs (SIGSTOP: sockets open, nothing answers) is replaced;
// writes go on through the others, and once it thaws it follows and
// catches up.
func TestProcess_FrozenLeader(t *testing.T) {
	pc := NewProcCluster(t, 3)
	ctx := context.Background()
	cl := pc.Client()
	lr := procTrader(t, cl, "fred")
	if _, err := cl.Deposit(ctx, "3.00", ""); err != nil {
		t.Fatal(err)
	}
	old := pc.Leader()
	old.Stop()
	start := time.Now()
	nl := pc.Leader()
	t.Logf("%s frozen; %s leads %v later", old.ID, nl.ID, time.Since(start).Round(time.Millisecond))
	// The client may try the frozen node first and must give up on it.
	if _, err := cl.Deposit(ctx, "4.00", ""); err != nil {
		t.Fatalf("deposit while the old leader is frozen: %v", err)
	}
	old.Cont()
	pc.WaitReady()
	if st, err := statusOf(old); err != nil || st.State != "Follower" || st.Leader == old.ID {
		t.Fatalf("thawed %s: %+v, %v", old.ID, st, err)
	}
	other := pc.Client(old)
	other.SetToken(lr.Token)
	if got := accountCash(t, other, transport.Stale); got != 700 {
		t.Fatalf("thawed %s has %s, want 7.00", old.ID, fmtCents(got))
	}
}

// A trader's default read is linearizable; it must work right after an
// election even when nobody writes. A new leader's log ends with entries
// that never reach the state machine (Raft's no-op and the leader's
// barrier), so a read index taken from the commit index can point past
// every command the followers and the leader will ever apply.
func TestProcess_LinearizableReadAfterElection(t *testing.T) {
	ctx := context.Background()
	readNow := func(t *testing.T, pc *ProcCluster, token string, nodes ...*Proc) {
		t.Helper()
		for _, p := range nodes {
			cl, err := transport.NewClient(transport.ClientConfig{Nodes: []string{p.HTTPAddr}, Token: token, Timeout: 8 * time.Second, Deadline: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			a, err := cl.Account(ctx, transport.Linearizable)
			if err != nil {
				st, _ := statusOf(p)
				t.Fatalf("linearizable read via %s after the election, no writes since: %v after %v (node status %+v)", p.ID, err, time.Since(start).Round(time.Millisecond), st)
			}
			if a.Cash != "1.00" {
				t.Fatalf("via %s: cash %s, want 1.00", p.ID, a.Cash)
			}
		}
	}
	t.Run("three_sigterm", func(t *testing.T) {
		pc := NewProcCluster(t, 3)
		cl := pc.Client()
		lr := procTrader(t, cl, "lin")
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			t.Fatal(err)
		}
		old := pc.Leader()
		old.Term()
		if code := old.WaitExit(procExitTimeout); code != 0 {
			t.Fatalf("exit status %d", code)
		}
		pc.Leader()
		readNow(t, pc, lr.Token, pc.Live()...)
	})
	t.Run("single_restart", func(t *testing.T) {
		pc := NewProcCluster(t, 1)
		cl := pc.Client()
		lr := procTrader(t, cl, "lin")
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			t.Fatal(err)
		}
		pc.Nodes[0].Kill()
		pc.Nodes[0].Restart()
		pc.WaitReady()
		readNow(t, pc, lr.Token, pc.Nodes[0])
	})
}

// procOneShot runs a `hats node` that is expected to exit by itself, on
// fresh ports (retrying when a bind loses a race).
func procOneShot(t testing.TB, timeout time.Duration, args func(raft, http string) []string) hatsRun {
	t.Helper()
	var r hatsRun
	for i := 0; i < procBindAttempts; i++ {
		r = runHats(t, timeout, hatsEnv(), "", args(procFreeAddr(t), procFreeAddr(t))...)
		if !strings.Contains(r.Stderr, "address already in use") {
			break
		}
	}
	return r
}

func TestProcess_SameIDTwice(t *testing.T) {
	pc := NewProcCluster(t, 2)
	n2 := pc.Nodes[1]
	dir := t.TempDir()
	r := procOneShot(t, 60*time.Second, func(raft, http string) []string {
		return []string{"node", "--id", n2.ID, "--data-dir", filepath.Join(dir, "dup"), "--raft-addr", raft, "--http-addr", http,
			"--insecure", "--join", pc.Nodes[0].HTTPAddr, "--join-attempts", "2"}
	})
	if r.Code == 0 || !strings.Contains(r.Stderr, "in use") {
		t.Fatalf("duplicate live ID: want a non-zero exit saying the ID is in use; %s", r)
	}
	if lines := strings.Count(strings.TrimSpace(r.Stderr), "\n"); lines != 0 {
		t.Logf("note: %d extra stderr lines", lines)
	}
	t.Logf("refused in %v: %s", r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	// The cluster is untouched: n2 is still the member at its address.
	pc.WaitReady()
}

func TestProcess_JoinDeadAddress(t *testing.T) {
	dead := procFreeAddr(t) // nothing listens there
	dir := t.TempDir()
	r := procOneShot(t, 60*time.Second, func(raft, http string) []string {
		return []string{"node", "--id", "x1", "--data-dir", filepath.Join(dir, "x1"), "--raft-addr", raft, "--http-addr", http,
			"--insecure", "--join", dead, "--join-attempts", "2"}
	})
	if r.Code == 0 || !strings.Contains(r.Stderr, dead) {
		t.Fatalf("join to a dead address: want a non-zero exit naming %s; %s", dead, r)
	}
	t.Logf("gave up in %v: %s", r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
}

func TestProcess_NoInsecure(t *testing.T) {
	dir := t.TempDir()
	r := procOneShot(t, 30*time.Second, func(raft, http string) []string {
		return []string{"node", "--id", "p1", "--data-dir", filepath.Join(dir, "p1"), "--raft-addr", raft, "--http-addr", http}
	})
	if r.Code == 0 || !strings.Contains(r.Stderr, "--insecure") {
		t.Fatalf("plaintext without --insecure: want a non-zero exit mentioning --insecure; %s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "p1")); err == nil {
		t.Fatal("the refused node created its data dir")
	}
}
