package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/transport"
)

func Test_envVarFor(t *testing.T) {
	for in, want := range map[string]string{
		"cluster":         "HATS_CLUSTER",
		"data-dir":        "HATS_DATA_DIR",
		"idempotency-key": "HATS_IDEMPOTENCY_KEY",
		"password-stdin":  "HATS_PASSWORD_STDIN",
	} {
		if got := envVarFor(in); got != want {
			t.Errorf("envVarFor(%q) = %q, want %q", in, got, want)
		}
	}
}

// Test_EveryFlagHasItsEnvVar walks every registered command, whoever wrote
// it, and checks the contract: flag --x-y has exactly env var HATS_X_Y.
func Test_EveryFlagHasItsEnvVar(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	type envFlag interface{ GetEnvVars() []string }
	check := func(where string, flags []cli.Flag) {
		for _, f := range flags {
			name := f.Names()[0]
			ef, ok := f.(envFlag)
			if !ok {
				t.Errorf("%s --%s (%T) cannot carry an env var", where, name, f)
				continue
			}
			if got, want := ef.GetEnvVars(), []string{envVarFor(name)}; !reflect.DeepEqual(got, want) {
				t.Errorf("%s --%s has env vars %q, want %q", where, name, got, want)
			}
		}
	}
	check("hats", app.Flags)
	n := 0
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := path + " " + c.Name
			check(p, c.Flags)
			n += len(c.Flags)
			walk(p, c.Subcommands)
		}
	}
	walk("hats", app.Commands)
	if n < 15 {
		t.Fatalf("walked only %d flags; is the tree registered?", n)
	}
}

func Test_Session_RoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "hats")
	path := filepath.Join(dir, "session.json")
	if s, err := readSession(path); s != nil || err != nil {
		t.Fatalf("missing file: got %v, %v; want nil, nil", s, err)
	}
	want := &session{
		Cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}, Token: "secret", Username: "ann",
		AccountID: 7, ExpiresAt: "2030-01-01T00:00:00Z", Node: "n1", Preferred: "http://10.0.0.2:8080",
	}
	for i := 0; i < 2; i++ { // create, then replace
		if err := writeSession(path, want); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("session dir mode %v, want 0700", di.Mode().Perm())
	}
	got, err := readSession(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	raw, _ := os.ReadFile(path)
	for _, key := range []string{`"cluster"`, `"token"`, `"username"`, `"account_id"`, `"expires_at"`, `"node"`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("session file lacks %s: %s", key, raw)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d entries, want only session.json (temp files left?)", len(entries))
	}
	if err := removeSession(path); err != nil {
		t.Fatal(err)
	}
	if err := removeSession(path); err != nil {
		t.Fatalf("removing a missing session: %v", err)
	}
}

func Test_parseAmount(t *testing.T) {
	good := map[string]string{"100": "100.00", "0.5": "0.50", "150.25": "150.25"}
	for in, want := range good {
		if got, err := parseAmount(in); err != nil || got != want {
			t.Errorf("parseAmount(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"1.234":             `amount: bad amount: "1.234" has more than 2 decimal places`,
		"0":                 "amount: bad amount: amount must be positive, got 0.00",
		"abc":               `amount: bad amount: "abc" is not a decimal like 150.25`,
		"":                  "amount: bad amount: empty",
		"10000000000000.00": "amount: bad amount: amount 10000000000000.00 exceeds the maximum 10000000000.00",
	}
	for in, want := range bad {
		if _, err := parseAmount(in); err == nil || err.Error() != want {
			t.Errorf("parseAmount(%q) error = %v, want %q", in, err, want)
		}
	}
}

func Test_permuteArgs(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	cases := []struct{ in, want string }{
		{"hats trade deposit 100 --cluster X", "hats trade --cluster X deposit 100"},
		{"hats trade --cluster X deposit 100", "hats trade --cluster X deposit 100"},
		{"hats trade deposit 100 --idempotency-key K --json", "hats trade --json deposit --idempotency-key K 100"},
		{"hats trade deposit --cluster=X 100 --insecure", "hats trade --cluster=X --insecure deposit 100"},
		{"hats trade --name N register ann", "hats trade register --name N ann"},
		{"hats trade deposit 100 --bogus", "hats trade deposit --bogus 100"},
		{"hats trade deposit -- -5", "hats trade deposit -- -5"},
		{"hats cluster remove n3 --cluster deposit", "hats cluster --cluster deposit remove n3"},
		{"hats trade help deposit", "hats trade help deposit"},
		{"hats", "hats"},
	}
	for _, tc := range cases {
		got := strings.Join(permuteArgs(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("permuteArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// runHats runs the CLI in-process.
func runHats(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"hats"}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func Test_run_UsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"trade", "deposit", "--bogus", "1"},
		{"trade", "deposit", "1", "--bogus"},
		{"--bogus"},
		{"trade", "nosuchcommand"},
		{"nosuchcommand"},
		{"trade", "deposit"},
		{"cluster", "--timeout", "soon", "status"},
	} {
		code, _, stderr := runHats(t, "", args...)
		if code != exitUsage {
			t.Errorf("hats %q exited %d, want 2 (stderr %q)", args, code, stderr)
		}
		if !strings.HasPrefix(stderr, "hats: ") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("hats %q stderr %q, want one line starting 'hats: '", args, stderr)
		}
	}
}

func Test_run_PlaintextNeedsInsecure(t *testing.T) {
	sess := filepath.Join(t.TempDir(), "s.json")
	code, _, stderr := runHats(t, "", "cluster", "status", "--cluster", "127.0.0.1:1", "--session", sess)
	if code == 0 || !strings.Contains(stderr, "plaintext HTTP needs --insecure; for a cluster serving TLS pass --tls-ca FILE") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// An explicit http:// address stays plaintext even with a CA.
	ca := filepath.Join(t.TempDir(), "certs")
	if code, _, stderr := runHats(t, "", "cert", "ca", "--dir", ca); code != 0 {
		t.Fatal(stderr)
	}
	code, _, stderr = runHats(t, "", "cluster", "status", "--cluster", "http://127.0.0.1:1", "--tls-ca", filepath.Join(ca, "ca.crt"), "--session", sess)
	if code == 0 || !strings.Contains(stderr, "plaintext HTTP needs --insecure") {
		t.Fatalf("http:// with --tls-ca: exit %d, stderr %q", code, stderr)
	}
}

// Test_run_NodeTLSFlags: a node gets TLS from all three files or
// plaintext from --insecure, never both and never half, and a gossip key
// file must hold a base64 AES key; each refusal names the flag.
func Test_run_NodeTLSFlags(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	for _, args := range [][]string{
		{"cert", "ca", "--dir", certs},
		{"cert", "node", "--dir", certs, "--name", "n1", "--host", "127.0.0.1"},
	} {
		if code, _, stderr := runHats(t, "", args...); code != 0 {
			t.Fatalf("hats %q: %s", args, stderr)
		}
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notB64 := filepath.Join(dir, "notb64.key")
	if err := os.WriteFile(notB64, []byte("!!!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"node", "--id", "n1", "--data-dir", filepath.Join(dir, "data"), "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2"}
	cert, key, ca := filepath.Join(certs, "n1.crt"), filepath.Join(certs, "n1.key"), filepath.Join(certs, "ca.crt")
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{nil, "plaintext HTTP and Raft need --insecure; for TLS give --tls-cert, --tls-key and --tls-ca"},
		{[]string{"--tls-cert", cert}, "--tls-key is required with TLS"},
		{[]string{"--tls-cert", cert, "--tls-key", key}, "--tls-ca is required with TLS"},
		{[]string{"--tls-cert", cert, "--tls-key", ca, "--tls-ca", ca}, "--tls-cert " + cert + " with --tls-key " + ca},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--insecure"}, "--insecure and --tls-cert/--tls-key/--tls-ca exclude each other"},
		{[]string{"--insecure", "--gossip-key-file", short}, "key is 5 bytes, want 16, 24 or 32"},
		{[]string{"--insecure", "--gossip-key-file", notB64}, "--gossip-key-file " + notB64 + ": not base64"},
		{[]string{"--insecure", "--gossip-key-file", filepath.Join(dir, "nope")}, "--gossip-key-file:"},
		{[]string{"--insecure", "--join", "https://127.0.0.1:3"}, "--join https://127.0.0.1:3: this node runs http, so its members are http:// addresses"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--join", "http://127.0.0.1:3"}, "this node runs https, so its members are https:// addresses"},
		{[]string{"--insecure", "--join", "127.0.0.1"}, "--join 127.0.0.1: want HOST:PORT"},
		{[]string{"--insecure", "--join", "http://127.0.0.1:3/v1"}, "--join: bad request: node address \"http://127.0.0.1:3/v1\" must be HOST:PORT"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--gossip-addr", "127.0.0.1:4"}, "--gossip-addr with TLS needs --gossip-key-file"},
		{[]string{"--insecure", "--tls-crl", ca}, "--tls-crl needs TLS"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--tls-crl", filepath.Join(dir, "nope.crl")}, "--tls-crl:"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--tls-crl", ca}, "want X509 CRL"},
	} {
		code, _, stderr := runHats(t, "", append(base, tc.extra...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("hats node %q: exit %d, stderr %q, want %q", tc.extra, code, stderr, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused node left a data dir behind: %v", err)
	}
}

// Test_run_RestoreFlags: hats restore names the flag it lacks or cannot
// use and leaves no data dir behind; hats node refuses the --restore it
// no longer takes and points at hats restore.
func Test_run_RestoreFlags(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	notBackup := filepath.Join(dir, "not-a-backup")
	if err := os.WriteFile(notBackup, []byte("not a state file"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"restore", "--id", "r1", "--data-dir", data, "--raft-addr", "127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{base, 2, "from: pass --from FILE"},
		{[]string{"restore", "--id", "r1", "--data-dir", data, "--from", notBackup}, 2, "raft-addr: pass the --raft-addr"},
		{[]string{"restore", "--data-dir", data, "--raft-addr", "127.0.0.1:1", "--from", notBackup}, 1, "--id must be a non-empty name"},
		{[]string{"restore", "--id", "r1", "--raft-addr", "127.0.0.1:1", "--from", notBackup}, 1, "--data-dir is required"},
		{append(base[:len(base):len(base)], "--from", filepath.Join(dir, "nope")), 1, "--from:"},
		{append(base[:len(base):len(base)], "--from", notBackup), 1, "--from:"},
		{[]string{"restore", "--id", "r1", "--data-dir", data, "--raft-addr", "0.0.0.0:1", "--from", notBackup}, 1, "--raft-addr:"},
		{[]string{"restore", "extra", "--id", "r1"}, 2, "restore takes no arguments"},
		{[]string{"node", "--id", "n1", "--data-dir", data, "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--insecure", "--restore", notBackup}, 2, "run hats restore --from FILE once"},
	} {
		code, _, stderr := runHats(t, "", tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("hats %q: exit %d, stderr %q, want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused restore left a data dir behind: %v", err)
	}
}

func Test_joinAddrs(t *testing.T) {
	got, err := joinAddrs([]string{"10.0.0.1:8080", "HTTPS://10.0.0.2:8080/", "https://[::1]:8080"}, true)
	if err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1:8080", "10.0.0.2:8080", "[::1]:8080"}) {
		t.Fatalf("joinAddrs = %q, %v", got, err)
	}
	got, err = joinAddrs([]string{"http://10.0.0.1:8080"}, false)
	if err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1:8080"}) {
		t.Fatalf("joinAddrs plaintext = %q, %v", got, err)
	}
}

// Test_run_Cert: hats cert refuses what it cannot make sensibly and
// never overwrites; what it makes verifies against its CA.
func Test_run_Cert(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cert", "node", "--dir", dir, "--host", "127.0.0.1"}, "ca-cert:"},
		{[]string{"cert", "ca", "--dir", dir, "--days", "0"}, "days: must be positive"},
	} {
		if code, _, stderr := runHats(t, "", tc.args...); code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("hats %q: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if code, _, stderr := runHats(t, "", "cert", "ca", "--dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cert", "node", "--dir", dir}, "host: pass --host"},
		{[]string{"cert", "client", "--dir", dir, "--name", "ca"}, "name: must be a plain file name other than ca"},
		{[]string{"cert", "client", "--dir", dir, "--name", "../x"}, "name: must be a plain file name"},
	} {
		if code, _, stderr := runHats(t, "", tc.args...); code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("hats %q: exit %d, stderr %q, want usage error %q", tc.args, code, stderr, tc.want)
		}
	}
	if code, _, stderr := runHats(t, "", "cert", "node", "--dir", dir, "--name", "n1", "--host", "10.1.2.3,node1.example"); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := runHats(t, "", "cert", "node", "--dir", dir, "--name", "n1", "--host", "10.1.2.3"); code == 0 || !strings.Contains(stderr, "exists") {
		t.Fatalf("second n1: exit %d, stderr %q", code, stderr)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	nodePEM, _ := os.ReadFile(filepath.Join(dir, "n1.crt"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	b, _ := pem.Decode(nodePEM)
	if b == nil {
		t.Fatal("n1.crt holds no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"10.1.2.3", "node1.example"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("n1.crt for %s: %v", host, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key")); err != nil {
		t.Errorf("n1 key pair: %v", err)
	}

	// Revocation: by file, then by serial; a repeat adds nothing; the list
	// is the CA's and loads as a node's --tls-crl.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cert", "revoke", "--dir", dir, "--serial", "zz"}, "serial: "},
		{[]string{"cert", "revoke", "--dir", dir, "--days", "0", "--serial", "1A"}, "days: must be positive"},
	} {
		if code, _, stderr := runHats(t, "", tc.args...); code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("hats %q: exit %d, stderr %q, want usage error %q", tc.args, code, stderr, tc.want)
		}
	}
	crl := filepath.Join(dir, "ca.crl")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cert", "revoke", "--dir", dir}, "revoked 0 (0 on the list)"},
		{[]string{"cert", "revoke", "--dir", dir, filepath.Join(dir, "n1.crt")}, "revoked 1 (1 on the list)"},
		{[]string{"cert", "revoke", "--dir", dir, filepath.Join(dir, "n1.crt")}, "revoked 0 (1 on the list)"},
		{[]string{"cert", "revoke", "--dir", dir, "--serial", "1A", "--serial", "0x1b"}, "revoked 2 (3 on the list)"},
	} {
		code, stdout, stderr := runHats(t, "", tc.args...)
		if code != 0 || !strings.Contains(stdout, crl) || !strings.Contains(stdout, tc.want) {
			t.Fatalf("hats %q: exit %d, stdout %q, stderr %q, want %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	if code, _, stderr := runHats(t, "", "cert", "revoke", "--dir", dir, filepath.Join(dir, "ca.key")); code == 0 || !strings.Contains(stderr, "no PEM CERTIFICATE block") {
		t.Errorf("revoke a key file: exit %d, stderr %q", code, stderr)
	}
	other := t.TempDir()
	for _, args := range [][]string{{"cert", "ca", "--dir", other}, {"cert", "client", "--dir", other, "--name", "stranger"}} {
		if code, _, stderr := runHats(t, "", args...); code != 0 {
			t.Fatal(stderr)
		}
	}
	if code, _, stderr := runHats(t, "", "cert", "revoke", "--dir", dir, filepath.Join(other, "stranger.crt")); code == 0 || !strings.Contains(stderr, "was not issued by this CA") {
		t.Errorf("revoke another CA's certificate: exit %d, stderr %q", code, stderr)
	}
	data, _ := os.ReadFile(crl)
	cb, _ := pem.Decode(data)
	if cb == nil || cb.Type != "X509 CRL" {
		t.Fatalf("ca.crl: %q", data)
	}
	list, err := x509.ParseRevocationList(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := pem.Decode(caPEM)
	caCert, _ := x509.ParseCertificate(ca.Bytes)
	if err := list.CheckSignatureFrom(caCert); err != nil || list.Number.Int64() != 4 || len(list.RevokedCertificateEntries) != 3 || list.RevokedCertificateEntries[0].SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Fatalf("ca.crl: number %v, %d entries, signature %v", list.Number, len(list.RevokedCertificateEntries), err)
	}
	// n1's own certificate is on the list: a node refuses to start with it.
	code, _, stderr := runHats(t, "", "node", "--id", "n1", "--data-dir", filepath.Join(dir, "data"), "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
		"--tls-cert", filepath.Join(dir, "n1.crt"), "--tls-key", filepath.Join(dir, "n1.key"), "--tls-ca", filepath.Join(dir, "ca.crt"), "--tls-crl", crl)
	if code == 0 || !strings.Contains(stderr, "own certificate is revoked") {
		t.Fatalf("node with its own certificate revoked: exit %d, stderr %q", code, stderr)
	}
}

func Test_run_NotLoggedIn(t *testing.T) {
	sess := filepath.Join(t.TempDir(), "s.json")
	code, _, stderr := runHats(t, "", "trade", "account", "--cluster", "127.0.0.1:1", "--insecure", "--session", sess)
	if code != exitFailure || !strings.Contains(stderr, "not logged in: run hats trade login USER") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// fakeAPI is a tiny stand-in for a node's HTTP API.
type fakeAPI struct {
	mu   sync.Mutex
	cash int64 // cents
	keys []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	acct := func() transport.Account {
		return transport.Account{Username: "ann", AccountID: 7, Cash: centsString(f.cash), AvailableCash: centsString(f.cash)}
	}
	if r.URL.Path != "/v1/sessions" && r.Header.Get("Authorization") != "Bearer tok-1" {
		reply(401, transport.ErrorBody{Error: transport.APIError{Code: transport.CodeUnauthenticated, Message: "bad token"}})
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/sessions":
		var req transport.LoginRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Password != "password123" {
			reply(401, transport.ErrorBody{Error: transport.APIError{Code: transport.CodeUnauthenticated, Message: "wrong username or password"}})
			return
		}
		reply(200, transport.LoginResponse{Token: "tok-1", ExpiresAt: "2030-01-01T00:00:00Z", Account: acct(), Node: "n1"})
	case "GET /v1/whoami":
		reply(200, transport.WhoAmI{Username: "ann", AccountID: 7, Node: "n1"})
	case "GET /v1/account":
		reply(200, acct())
	case "POST /v1/account/deposit":
		var req transport.AmountRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.keys = append(f.keys, req.IdempotencyKey)
		if req.Amount != "100.00" {
			reply(400, transport.ErrorBody{Error: transport.APIError{Code: transport.CodeBadRequest, Message: "want 100.00, got " + req.Amount}})
			return
		}
		f.cash += 10000
		reply(200, acct())
	case "POST /v1/account/withdraw":
		reply(503, transport.ErrorBody{Error: transport.APIError{Code: transport.CodeOutcomeUnknown, Message: "leadership lost"}})
	case "DELETE /v1/sessions/current":
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func centsString(c int64) string {
	b, _ := json.Marshal(c / 100)
	return string(b) + "." + string([]byte{byte('0' + c%100/10), byte('0' + c%10)})
}

func Test_run_TradeSession(t *testing.T) {
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	sess := filepath.Join(t.TempDir(), "hats", "session.json")
	t.Setenv("HATS_INSECURE", "1")
	t.Setenv("HATS_SESSION", sess)

	code, _, stderr := runHats(t, "wrong-password\n", "trade", "login", "ann", "--password-stdin", "--cluster", addr)
	if code != exitFailure || !strings.Contains(stderr, "wrong username or password") {
		t.Fatalf("bad login: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runHats(t, "password123\n", "trade", "--cluster", addr, "login", "ann", "--password-stdin")
	if code != 0 {
		t.Fatalf("login: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "logged in as") || strings.Contains(stdout, "tok-1") {
		t.Fatalf("login output %q", stdout)
	}
	s, err := readSession(sess)
	if err != nil || s == nil || s.Token != "tok-1" || s.AccountID != 7 || s.Node != "n1" || s.Cluster[0] != addr {
		t.Fatalf("session %+v, %v", s, err)
	}

	// The session remembers the cluster; flags may follow the amount.
	code, stdout, stderr = runHats(t, "", "trade", "deposit", "100", "--idempotency-key", "dep-1", "--json")
	if code != 0 {
		t.Fatalf("deposit: exit %d, stderr %q", code, stderr)
	}
	var acct transport.Account
	if err := json.Unmarshal([]byte(stdout), &acct); err != nil || acct.Cash != "100.00" {
		t.Fatalf("deposit --json printed %q (%v)", stdout, err)
	}
	if api.keys[0] != "dep-1" {
		t.Fatalf("server saw key %q, want dep-1", api.keys[0])
	}

	code, stdout, _ = runHats(t, "", "trade", "account", "--consistency", "stale")
	if code != 0 || !strings.Contains(stdout, "available cash") || !strings.Contains(stdout, "100.00") {
		t.Fatalf("account: exit %d, stdout %q", code, stdout)
	}
	code, stdout, _ = runHats(t, "", "trade", "whoami", "--json")
	if code != 0 || !strings.Contains(stdout, `"username": "ann"`) || !strings.Contains(stdout, `"account_id": 7`) {
		t.Fatalf("whoami: exit %d, stdout %q", code, stdout)
	}

	code, _, stderr = runHats(t, "", "trade", "withdraw", "5", "--timeout", "300ms", "--idempotency-key", "wd-9")
	if code != exitFailure || !strings.Contains(stderr, "--idempotency-key wd-9") || !strings.Contains(stderr, "outcome unknown") {
		t.Fatalf("withdraw: exit %d, stderr %q", code, stderr)
	}

	code, _, stderr = runHats(t, "", "trade", "logout")
	if code != 0 {
		t.Fatalf("logout: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(sess); !os.IsNotExist(err) {
		t.Fatalf("session file still there after logout: %v", err)
	}
}

func Test_exitCode(t *testing.T) {
	if exitCode(cli.Exit("x", 7)) != 7 {
		t.Error("ExitCoder code not kept")
	}
	if exitCode(io.EOF) != exitFailure {
		t.Error("plain error is not 1")
	}
	if exitCode(context.Canceled) != exitInterrupted {
		t.Error("interrupt is not 130")
	}
}

// Test_printClusterStatus_Rules: the status header names the rules version
// in force on the leader and, mid-upgrade, what holds a raise back.
func Test_printClusterStatus_Rules(t *testing.T) {
	var b bytes.Buffer
	printClusterStatus(&b, &transport.ClusterStatus{Leader: "n1", Term: 3, Nodes: []transport.NodeStatus{
		{ID: "n1", State: "Leader", Rules: 1, MaxRules: 2, RulesPending: "rules version 2 waits: member n3 applies up to 1"},
		{ID: "n3", State: "Follower", Rules: 1, MaxRules: 1},
	}})
	out := b.String()
	for _, want := range []string{"leader n1  term 3", "rules 1 (this release up to 2)", "\nrules version 2 waits: member n3 applies up to 1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, out)
		}
	}
}
