package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Client defaults.
const (
	DefaultRequestTimeout = 5 * time.Second  // one HTTP request
	DefaultDeadline       = 15 * time.Second // one Client call, all retries included
	MaxResponseBytes      = 4 << 20          // largest response body the client reads

	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Nodes are HTTP addresses of any cluster members: "host:port" (plain
	// HTTP) or full "http://" / "https://" URLs.
	Nodes []string
	// Token is the session token sent as "Authorization: Bearer TOKEN".
	Token string
	// Timeout bounds one HTTP request (default DefaultRequestTimeout).
	Timeout time.Duration
	// Deadline bounds one Client call including every retry and failover
	// (default DefaultDeadline). The caller's context may end it sooner.
	Deadline time.Duration
	// MaxAttempts caps the attempts of one call; 0 means only Deadline
	// limits them.
	MaxAttempts int
	// TLS, when set, is used for https and makes "host:port" addresses
	// (given, hinted or assigned) https (LoadClientTLS builds one). Without
	// it they are https only if a configured node is an https:// URL.
	TLS *tls.Config
	// HTTPClient replaces the default client (whose dial, TLS handshake,
	// response header and overall timeouts all derive from Timeout).
	HTTPClient *http.Client
	// Logger receives retry and failover events at debug level.
	Logger *slog.Logger
}

// Client is the Go client of the HATS HTTP API. It fails over between the
// configured nodes, follows leader hints, and retries writes with one
// idempotency key so their outcome is definite. It is safe for concurrent
// use.
type Client struct {
	// assignedID/assignedAddr: the Trading Server the LDS assigned this
	// session to (guarded by mu).
	assignedID   string
	assignedAddr string

	hc          *http.Client
	scheme      string // for addresses without one: "http" or "https"
	timeout     time.Duration
	deadline    time.Duration
	maxAttempts int
	log         *slog.Logger

	mu        sync.Mutex
	nodes     []string // base URLs, e.g. "http://10.0.0.1:8080"
	preferred string   // base URL of the last node that answered
	token     string
	// streamLeader: base URL of the leader order streams open at first
	// (client_orderstream.go); streamsStay: they stay on preferred.
	streamLeader string
	streamsStay  bool
	// failedLeader: a leader an open could not reach, not tried again
	// by a move until failedUntil.
	failedLeader string
	failedUntil  time.Time
}

// OutcomeUnknownError reports a write that may or may not have been applied:
// every attempt that might have reached the cluster went unanswered before
// the deadline. Retrying with the same Key returns the original result.
type OutcomeUnknownError struct {
	Key string // idempotency key of the write; "" for writes without one
	Err error  // the last error seen
}

func (e *OutcomeUnknownError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("outcome unknown: %v", e.Err)
	}
	return fmt.Sprintf("outcome unknown (idempotency key %s): %v", e.Key, e.Err)
}

// Unwrap yields ErrOutcomeUnknown and the last error seen.
func (e *OutcomeUnknownError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// ErrorCode returns the API error code carried by err ("" if none), for
// codes without a sentinel such as "insufficient_funds" or
// "idempotency_key_reused".
func ErrorCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// NewIdempotencyKey returns a fresh 128-bit key in hex (32 digits): the
// time in milliseconds (48 bits) then 80 random bits, so keys made later
// sort later, as UUIDv7 does. The state machine indexes keys (and client
// order IDs, NewClientID) per account in a B+tree; increasing keys land
// at the end of their account's range, where random ones would each
// dirty a different page of a large index on every checkpoint.
func NewIdempotencyKey() string {
	var b [16]byte
	if _, err := rand.Read(b[6:]); err != nil {
		panic("transport: crypto/rand failed: " + err.Error())
	}
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(time.Now().UnixMilli()))
	copy(b[:6], ms[2:]) // the low 48 bits
	return hex.EncodeToString(b[:])
}

// NormalizeAddr turns "host:port" into "http://host:port" and checks that
// URLs carry only a scheme and a host.
func NormalizeAddr(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	if a == "" {
		return "", fmt.Errorf("%w: empty node address", ErrBadRequest)
	}
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil {
		return "", fmt.Errorf("%w: node address %q: %v", ErrBadRequest, addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%w: node address %q: scheme must be http or https", ErrBadRequest, addr)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("%w: node address %q must be HOST:PORT or a URL like http://HOST:PORT", ErrBadRequest, addr)
	}
	return u.Scheme + "://" + u.Host, nil
}

// NewClient builds a Client; it fails if no node address is valid.
func NewClient(cfg ClientConfig) (*Client, error) {
	c := &Client{
		timeout:     cfg.Timeout,
		deadline:    cfg.Deadline,
		maxAttempts: cfg.MaxAttempts,
		log:         cfg.Logger,
		token:       cfg.Token,
		scheme:      "http",
	}
	if cfg.TLS != nil {
		c.scheme = "https"
	}
	for _, n := range cfg.Nodes {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(n)), "https://") {
			c.scheme = "https"
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.deadline <= 0 {
		c.deadline = DefaultDeadline
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for _, n := range cfg.Nodes {
		u, err := c.normalize(n)
		if err != nil {
			return nil, err
		}
		c.addNodeLocked(u)
	}
	if len(c.nodes) == 0 {
		return nil, fmt.Errorf("%w: no node addresses given", ErrBadRequest)
	}
	c.preferred = c.nodes[0]
	c.hc = cfg.HTTPClient
	if c.hc == nil {
		c.hc = newHTTPClient(c.timeout, cfg.TLS)
	}
	return c, nil
}

// normalize is NormalizeAddr with the client's scheme for bare addresses.
func (c *Client) normalize(addr string) (string, error) {
	if a := strings.TrimSpace(addr); a != "" && !strings.Contains(a, "://") {
		addr = c.scheme + "://" + a
	}
	return NormalizeAddr(addr)
}

func newHTTPClient(timeout time.Duration, tlsConfig *tls.Config) *http.Client {
	dial := min(timeout, 3*time.Second)
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:       tlsConfig.Clone(), // the transport writes NextProtos into it
			DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			ExpectContinueTimeout: time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (c *Client) addNodeLocked(u string) {
	for _, n := range c.nodes {
		if n == u {
			return
		}
	}
	c.nodes = append(c.nodes, u)
}

// SetToken sets the session token sent with authenticated calls.
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
}

// Token returns the current session token.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// SetPreferred makes addr the first node tried, adding it to the node list
// if it is new.
func (c *Client) SetPreferred(addr string) error {
	u, err := c.normalize(addr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.addNodeLocked(u)
	c.preferred = u
	c.mu.Unlock()
	return nil
}

// Preferred returns the base URL of the node tried first: the last node
// that answered.
func (c *Client) Preferred() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.preferred
}

// Nodes returns the base URLs the client knows, leader hints included.
func (c *Client) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.nodes...)
}

// order returns the nodes starting at the preferred one.
func (c *Client) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := 0
	for i, n := range c.nodes {
		if n == c.preferred {
			start = i
		}
	}
	out := make([]string, 0, len(c.nodes))
	out = append(out, c.nodes[start:]...)
	return append(out, c.nodes[:start]...)
}

// retryMode says which failures a call may retry.
type retryMode int

const (
	// retrySafe: reads, login, logout, joins: retry every transient failure.
	retrySafe retryMode = iota
	// retryKeyed: writes carrying an idempotency key: retry every transient
	// failure with the same key; report ErrOutcomeUnknown if none resolves.
	retryKeyed
	// retryUnsent: writes without a key: fail over only when the request
	// surely never reached a node.
	retryUnsent
)

type call struct {
	name   string // for logs and errors, e.g. "deposit"
	method string
	path   string
	query  url.Values
	body   any
	auth   bool
	mode   retryMode
	key    string // idempotency key of a retryKeyed call
	out    any    // decoded on 2xx when non-nil
}

// do runs a call with failover, leader hints, backoff and the overall
// deadline.
func (c *Client) do(ctx context.Context, cl call) error {
	ctx, cancel := context.WithTimeout(ctx, c.deadline)
	defer cancel()

	var body []byte
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", cl.name, err)
		}
		body = b
	}

	r := retryState{call: cl, backoff: backoffMin, hinted: map[string]bool{}}
	var queue []string // nodes to try next, in order
	assignedDown := false
	for {
		if ctx.Err() != nil {
			return r.giveUp(ctx)
		}
		if len(queue) == 0 {
			queue = c.order()
		}
		node := queue[0]
		queue = queue[1:]
		r.try(node)

		apiErr, sent, err := c.attempt(ctx, cl, node, body)
		if err == nil {
			if assignedDown && cl.name != "reassign" && c.Token() != "" {
				c.followReassignment(ctx)
			}
			return nil
		}
		if apiErr == nil && node == c.assigned() {
			assignedDown = true // the assigned Trading Server stopped answering
		}
		var hint string
		if apiErr != nil {
			// The node answered with an error.
			r.lastErr = apiErr
			if !retryable(apiErr) {
				if r.maybeSent && cl.mode != retrySafe && (apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden) {
					// The repeat was refused before its key was looked
					// up: the first attempt's fate is still unknown.
					return &OutcomeUnknownError{Key: cl.key, Err: apiErr}
				}
				return apiErr
			}
			if apiErr.Code == CodeOutcomeUnknown {
				r.maybeSent = true
				if cl.mode == retryUnsent {
					return &OutcomeUnknownError{Err: apiErr}
				}
			}
			if apiErr.Leader != "" {
				if u := leaderURL(apiErr.Leader, node); u != "" && u != node {
					hint = u
				}
			}
		} else {
			if sent {
				r.maybeSent = true
			}
			if ctx.Err() != nil {
				if r.lastErr == nil {
					r.lastErr = err
				}
				return r.giveUp(ctx)
			}
			r.lastErr = err
			if sent && cl.mode == retryUnsent {
				return &OutcomeUnknownError{Err: fmt.Errorf("%s: %w", cl.name, err)}
			}
		}
		if c.maxAttempts > 0 && r.attempts >= c.maxAttempts {
			return r.giveUp(ctx)
		}

		// Choose the next node and how long to wait before trying it.
		wait := r.backoff
		switch {
		case hint != "":
			c.mu.Lock()
			c.addNodeLocked(hint)
			c.mu.Unlock()
			queue = append([]string{hint}, queue...)
			if !r.hinted[hint] {
				r.hinted[hint] = true
				wait = 0 // a new lead: follow it at once
			}
		case apiErr != nil:
			// A live node without a usable leader: elections take time.
		case r.sinceWait < len(c.Nodes()):
			wait = 0 // a connection failed; other nodes are untried this round
		}
		c.log.Debug("retrying", "call", cl.name, "node", node, "err", r.lastErr, "next", queue[:min(1, len(queue))], "wait", wait, "attempt", r.attempts)
		if wait > 0 {
			r.sinceWait = 0
			r.backoff = min(r.backoff*2, backoffMax)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return r.giveUp(ctx)
			case <-t.C:
			}
		}
	}
}

// retryState is the bookkeeping of one call's attempts.
type retryState struct {
	call      call
	attempts  int
	sinceWait int // attempts since the last backoff sleep
	backoff   time.Duration
	tried     []string // distinct nodes, in the order first tried
	hinted    map[string]bool
	lastErr   error
	maybeSent bool // some attempt may have reached a node
}

func (r *retryState) try(node string) {
	r.attempts++
	r.sinceWait++
	for _, t := range r.tried {
		if t == node {
			return
		}
	}
	r.tried = append(r.tried, node)
}

// giveUp builds the error of a call whose retries ran out.
func (r *retryState) giveUp(ctx context.Context) error {
	cl := r.call
	if r.lastErr == nil {
		r.lastErr = ctx.Err()
	}
	if r.maybeSent && cl.mode != retrySafe {
		return &OutcomeUnknownError{Key: cl.key, Err: fmt.Errorf("%s: no definite answer after %d attempts (tried %s): %w",
			cl.name, r.attempts, strings.Join(r.tried, ", "), r.lastErr)}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: %w", cl.name, context.Canceled)
	}
	var ae *APIError
	if errors.As(r.lastErr, &ae) {
		// Nodes answered, but none could serve the call.
		return fmt.Errorf("%s: gave up after %d attempts (tried %s): %w", cl.name, r.attempts, strings.Join(r.tried, ", "), r.lastErr)
	}
	return fmt.Errorf("%s: %w after %d attempts (tried %s): %w", cl.name, ErrNoNodes, r.attempts, strings.Join(r.tried, ", "), r.lastErr)
}

// retryable reports whether an API error is worth another attempt: only
// 503s (no leader, unavailable, outcome unknown).
func retryable(e *APIError) bool {
	if e.Status != http.StatusServiceUnavailable {
		return false
	}
	switch e.Code {
	case CodeNoLeader, CodeUnavailable, CodeOutcomeUnknown:
		return true
	}
	return false
}

// refusal returns err's *APIError when it is a definite answer no other
// node would change (not retryable), else nil.
func refusal(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) && !retryable(ae) {
		return ae
	}
	return nil
}

// attempt sends one request to one node. It returns a non-nil *APIError when
// the node answered with an error; sent reports whether a transport failure
// happened after the request may have reached the node.
func (c *Client) attempt(ctx context.Context, cl call, node string, body []byte) (apiErr *APIError, sent bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := node + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, cl.method, u, rd)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", cl.name, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.auth {
		if tok := c.Token(); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", node, ue.Err)
		}
		return nil, !dialFailed(err), err
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if rerr != nil {
		return nil, true, fmt.Errorf("%s: read response from %s: %w", cl.name, node, rerr)
	}
	if len(data) > MaxResponseBytes {
		// A definite answer we refuse to read; not worth retrying.
		return &APIError{Status: resp.StatusCode, Code: CodeBodyTooLarge, Message: fmt.Sprintf("%s: response from %s exceeds %d bytes", cl.name, node, MaxResponseBytes)}, true, errors.New("response too large")
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := decodeAPIError(resp.StatusCode, data)
		if ae.Code != CodeNoLeader && ae.Code != CodeUnavailable {
			c.markAnswered(node)
		}
		return ae, true, ae
	}
	c.markAnswered(node)
	if cl.out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, cl.out); err != nil {
			// The call happened; its answer is unreadable.
			return &APIError{Status: resp.StatusCode, Code: CodeInternal, Message: fmt.Sprintf("%s: bad response from %s: %v", cl.name, node, err)}, true, err
		}
	}
	return nil, true, nil
}

// markAnswered makes a known node that gave a definite answer preferred.
func (c *Client) markAnswered(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n == node {
			c.preferred = node
			return
		}
	}
}

// dialFailed reports whether err happened while connecting, so the request
// surely never reached the server.
func dialFailed(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// decodeAPIError turns an error response into an *APIError, inventing a
// code from the status when the body is not a HATS error body.
func decodeAPIError(status int, data []byte) *APIError {
	var eb ErrorBody
	if err := json.Unmarshal(data, &eb); err == nil && eb.Error.Code != "" {
		ae := eb.Error
		ae.Status = status
		if ae.Message == "" {
			ae.Message = ae.Code
		}
		return &ae
	}
	ae := &APIError{Status: status, Code: codeForStatus(status)}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	ae.Message = http.StatusText(status)
	if msg != "" {
		ae.Message += ": " + msg
	}
	return ae
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return CodeBodyTooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeInternal
}

// Register creates a user. An empty key is replaced by a fresh one, used for
// every retry.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*Account, error) {
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = NewIdempotencyKey()
	}
	var out Account
	err := c.do(ctx, call{name: "register", method: http.MethodPost, path: "/v1/users", body: req, mode: retryKeyed, key: req.IdempotencyKey, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAssigned records the Trading Server this session is assigned to and
// makes it the preferred node.
func (c *Client) SetAssigned(id, addr string) {
	u, err := c.normalize(addr)
	if err != nil || id == "" || (c.scheme == "https" && !strings.HasPrefix(u, "https://")) {
		return // not an address, or a downgrade to plaintext: the token would travel in the clear
	}
	c.mu.Lock()
	c.addNodeLocked(u)
	c.assignedID, c.assignedAddr, c.preferred = id, u, u
	c.mu.Unlock()
}

// Assigned returns the session's Trading Server (id and address).
func (c *Client) Assigned() (id, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.assignedID, c.assignedAddr
}

func (c *Client) assigned() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.assignedAddr
}

// Reassign asks any LDS for a new Trading Server because the assigned one
// stopped answering; the session stays valid (no new login).
func (c *Client) Reassign(ctx context.Context) (*Assignment, error) {
	id, _ := c.Assigned()
	var out Assignment
	err := c.do(ctx, call{name: "reassign", method: http.MethodPost, path: "/v1/sessions/current/reassign",
		body: ReassignRequest{Unreachable: id}, auth: true, out: &out})
	if err != nil {
		return nil, err
	}
	c.SetAssigned(out.Node, out.NodeAddr)
	return &out, nil
}

// reassignWait bounds the reassignment a call makes after it succeeded
// elsewhere than its failed Trading Server. Reassigning is a Raft write:
// from a node that cannot reach a leader (one serving reads in a minority)
// it would otherwise hold an answered call until the call's deadline.
const reassignWait = time.Second

// followReassignment moves the session after its Trading Server failed,
// waiting at most reassignWait; errors are not the caller's concern (the
// next call that finds the server down tries again).
func (c *Client) followReassignment(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reassignWait)
	defer cancel()
	if _, err := c.Reassign(ctx); err != nil {
		c.log.Debug("reassignment failed", "err", err)
	}
}

// Login opens a session and keeps its token in the client.
func (c *Client) Login(ctx context.Context, username, password string) (*LoginResponse, error) {
	var out LoginResponse
	err := c.do(ctx, call{name: "login", method: http.MethodPost, path: "/v1/sessions", body: LoginRequest{Username: username, Password: password}, out: &out})
	if err != nil {
		return nil, err
	}
	c.SetToken(out.Token)
	c.SetAssigned(out.Node, out.NodeAddr)
	return &out, nil
}

// Logout revokes the session and forgets its token. A token the server no
// longer accepts counts as logged out.
func (c *Client) Logout(ctx context.Context) error {
	err := c.do(ctx, call{name: "logout", method: http.MethodDelete, path: "/v1/sessions/current", auth: true})
	if err != nil && !errors.Is(err, ErrUnauthenticated) {
		return err
	}
	c.SetToken("")
	return nil
}

// WhoAmI returns the session's user.
func (c *Client) WhoAmI(ctx context.Context) (*WhoAmI, error) {
	var out WhoAmI
	if err := c.do(ctx, call{name: "whoami", method: http.MethodGet, path: "/v1/whoami", auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Account reads the session's account at the given consistency ("" means
// linearizable).
func (c *Client) Account(ctx context.Context, consistency Consistency) (*Account, error) {
	q := url.Values{}
	if consistency != "" {
		q.Set("consistency", string(consistency))
	}
	var out Account
	if err := c.do(ctx, call{name: "account", method: http.MethodGet, path: "/v1/account", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deposit adds amount (a decimal string like "150.25") to the account. An
// empty key is replaced by a fresh one, used for every retry.
func (c *Client) Deposit(ctx context.Context, amount, key string) (*Account, error) {
	return c.amount(ctx, "deposit", amount, key)
}

// Withdraw removes amount from the account. An empty key is replaced by a
// fresh one, used for every retry.
func (c *Client) Withdraw(ctx context.Context, amount, key string) (*Account, error) {
	return c.amount(ctx, "withdraw", amount, key)
}

func (c *Client) amount(ctx context.Context, op, amount, key string) (*Account, error) {
	if key == "" {
		key = NewIdempotencyKey()
	}
	var out Account
	err := c.do(ctx, call{name: op, method: http.MethodPost, path: "/v1/account/" + op, body: AmountRequest{Amount: amount, IdempotencyKey: key}, auth: true, mode: retryKeyed, key: key, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateProfile changes the name and/or email. An empty key is replaced by a
// fresh one, used for every retry.
func (c *Client) UpdateProfile(ctx context.Context, req ProfileRequest) (*Account, error) {
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = NewIdempotencyKey()
	}
	var out Account
	err := c.do(ctx, call{name: "profile", method: http.MethodPost, path: "/v1/account/profile", body: req, auth: true, mode: retryKeyed, key: req.IdempotencyKey, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Status returns the status of the first node that answers, starting with
// the preferred one.
func (c *Client) Status(ctx context.Context) (*NodeStatus, error) {
	var out NodeStatus
	if err := c.do(ctx, call{name: "status", method: http.MethodGet, path: "/v1/status", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// NodeStatusAt asks one node for its status, in one attempt.
func (c *Client) NodeStatusAt(ctx context.Context, addr string) (*NodeStatus, error) {
	u, err := c.normalize(addr)
	if err != nil {
		return nil, err
	}
	var out NodeStatus
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if _, _, err := c.attempt(ctx, call{name: "status", method: http.MethodGet, path: "/v1/status", out: &out}, u, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// ClusterStatus returns every member's status as one node sees it.
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	if err := c.do(ctx, call{name: "cluster status", method: http.MethodGet, path: "/v1/cluster/status", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Join asks the cluster to add a voter. Joins are idempotent, so every node
// is tried until one accepts; the error names the addresses tried.
func (c *Client) Join(ctx context.Context, req JoinRequest) error {
	return c.do(ctx, call{name: "join", method: http.MethodPost, path: "/v1/cluster/join", body: req, out: &struct{}{}})
}

// Remove asks the cluster to remove a member. Removal is idempotent on the
// server, so it is retried like a read.
func (c *Client) Remove(ctx context.Context, id string) error {
	return c.do(ctx, call{name: "remove", method: http.MethodPost, path: "/v1/cluster/remove", body: RemoveRequest{ID: id}, out: &struct{}{}})
}

// TransferLeadership asks the leader to hand over to id ("" lets Raft
// choose). It is not repeated once a request may have arrived: a repeat
// could move leadership twice.
func (c *Client) TransferLeadership(ctx context.Context, id string) error {
	return c.do(ctx, call{name: "transfer leadership", method: http.MethodPost, path: "/v1/cluster/transfer-leadership", body: TransferRequest{ID: id}, mode: retryUnsent, out: &struct{}{}})
}
