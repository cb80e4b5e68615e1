package transport

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/trader"
)

// Body size limits.
const (
	MaxJSONBody    = 64 << 10
	MaxCommandBody = 1 << 20
	// MaxForwardedBatchBody bounds a follower's batch of forwarded commands.
	MaxForwardedBatchBody = 16 << 20
)

// Principal is an authenticated trader.
type Principal struct {
	AccountID uint64
	Username  string
	Expires   int64 // unix nanoseconds
	TokenHash []byte
	Node      string // assigned Trading Server
}

// Backend is what the HTTP API needs from a node. node.Node implements it.
type Backend interface {
	NodeID() string
	// Apply runs a command through the one write path (forwarded to the
	// leader when this node is not it) and returns its result.
	Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error)
	// Read runs fn on local state once it is at least as new as c demands.
	Read(ctx context.Context, c Consistency, fn func(*fsm.View) error) error
	Register(ctx context.Context, req RegisterRequest) (*fsm.Result, error)
	// Login checks the password, assigns a Trading Server and commits the
	// session; the assignment is in the returned LoginResponse.
	Login(ctx context.Context, username, password string) (token string, expires int64, res *fsm.Result, asg Assignment, err error)
	// Reassign moves the session to another healthy Trading Server.
	Reassign(ctx context.Context, p Principal, unreachable string) (Assignment, error)
	// Members is the LDS view of the gossip ring (nil without gossip).
	Members() []Member
	// CountRequest feeds the requests/s load figure.
	CountRequest()
	Authenticate(ctx context.Context, token string) (Principal, error)
	Join(ctx context.Context, req JoinRequest) error
	Remove(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context, id string) error
	Status() NodeStatus
	FreshStatus() NodeStatus // Status with the hash of the current state
	ClusterStatus(ctx context.Context) ClusterStatus
	// ApplyForwardedBatch applies a batch of encoded commands sent by a
	// follower and returns one encoded outcome per command.
	ApplyForwardedBatch(ctx context.Context, batch []byte) ([]byte, error)
	// ReadIndex is the leader's side of a follower's consistent read.
	ReadIndex(ctx context.Context, verify bool) (uint64, error)
	ClusterKey() string
	Ready() error
	// MarketBook returns the top depth levels of a symbol's in-memory book
	// as of this node's last applied batch.
	MarketBook(symbol string, depth int) (*fsm.BookSnapshot, bool)
	// HasSymbol reports whether an instrument is listed in the state this
	// node has applied (no read transaction: checked on every order).
	HasSymbol(symbol string) bool
	// MarketDataStale reports that the Market Engine has not ticked for
	// several feed intervals (or runs no feed at all).
	MarketDataStale() bool
	// LeaderHTTP returns the leader's HTTP address as this node knows it
	// ("" when it knows none).
	LeaderHTTP() string
}

// Server serves the HTTP API on a private mux.
type Server struct {
	b   Backend
	log *slog.Logger
	mux *http.ServeMux

	connMu  sync.Mutex
	conns   map[net.Conn]struct{} // hijacked forward and order streams
	closing bool
}

// NewServer builds the API handler for b.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, log: log, mux: http.NewServeMux()}
	s.routes()
	return s
}

// NewHTTPServer wraps h in an http.Server with timeouts on every phase.
// Forward and order streams taken over from HTTP, which it does not
// track, are closed on Shutdown.
func NewHTTPServer(h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if s, ok := h.(*Server); ok {
		srv.RegisterOnShutdown(s.CloseStreams)
		// net/http's own complaints (failed TLS handshakes from scanners
		// or clients without the CA, malformed requests) go to the
		// component's logger at debug level instead of raw stderr lines.
		srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	}
	return srv
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	m.HandleFunc("GET /readyz", s.readyz)
	m.HandleFunc("POST /v1/users", s.register)
	m.HandleFunc("POST /v1/sessions", s.login)
	m.HandleFunc("DELETE /v1/sessions/current", s.auth(s.logout))
	m.HandleFunc("GET /v1/whoami", s.auth(s.whoami))
	m.HandleFunc("POST /v1/sessions/current/reassign", s.auth(s.reassign))
	m.HandleFunc("GET /v1/cluster/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"members": s.b.Members()})
	})
	m.HandleFunc("GET /v1/account", s.auth(s.account))
	m.HandleFunc("GET /v1/accounts/{id}", s.auth(s.accountByID))
	m.HandleFunc("POST /v1/account/deposit", s.auth(s.cash(fsm.TypeDeposit)))
	m.HandleFunc("POST /v1/account/withdraw", s.auth(s.cash(fsm.TypeWithdraw)))
	m.HandleFunc("POST /v1/account/profile", s.auth(s.profile))
	m.HandleFunc("GET /v1/status", s.status)
	m.HandleFunc("GET /v1/cluster/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.b.ClusterStatus(r.Context())) })
	m.HandleFunc("POST /v1/cluster/join", s.clientCert(false, s.join))
	m.HandleFunc("POST /v1/cluster/remove", s.clientCert(false, s.remove))
	m.HandleFunc("POST /v1/cluster/transfer-leadership", s.clientCert(false, s.transfer))
	m.HandleFunc("GET "+PathBackup, s.clientCert(false, s.backup))
	m.HandleFunc("POST "+PathInternalApplyMany, s.internal(s.internalApply))
	m.HandleFunc("POST "+PathInternalForwardStream, s.internal(s.forwardStream))
	m.HandleFunc("GET "+PathInternalReadIndex, s.internal(s.internalReadIndex))
	s.marketRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Status: 404, Code: CodeNotFound, Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *APIError) {
	writeJSON(w, e.Status, ErrorBody{Error: *e})
}

// toAPIError maps any error from the backend to a stable code and status.
func toAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		if ae.Status == 0 {
			ae.Status = 500
		}
		return ae
	}
	msg := err.Error()
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return &APIError{Status: 503, Code: CodeOutcomeUnknown, Message: msg}
	case errors.Is(err, ErrNoLeader):
		return &APIError{Status: 503, Code: CodeNoLeader, Message: msg}
	case errors.Is(err, ErrUnauthenticated):
		return &APIError{Status: 401, Code: CodeUnauthenticated, Message: msg}
	case errors.Is(err, ErrForbidden):
		return &APIError{Status: 403, Code: CodeForbidden, Message: msg}
	case errors.Is(err, ErrBadRequest):
		return &APIError{Status: 400, Code: CodeBadRequest, Message: msg}
	case errors.Is(err, ErrConflict):
		return &APIError{Status: 409, Code: CodeNodeIDInUse, Message: msg}
	case errors.Is(err, ErrIncompatible):
		return &APIError{Status: 409, Code: CodeIncompatible, Message: msg}
	case errors.Is(err, ErrNotFound):
		return &APIError{Status: 404, Code: CodeNotFound, Message: msg}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &APIError{Status: 503, Code: CodeUnavailable, Message: msg}
	}
	return &APIError{Status: 500, Code: CodeInternal, Message: msg}
}

// resultError maps a business rejection to an API error.
func resultError(res *fsm.Result) *APIError {
	status := 422
	switch res.Code {
	case fsm.CodeUsernameTaken, fsm.CodeIdempotencyReused, fsm.CodeAlreadyInitialized:
		status = 409
	case fsm.CodeUnknownSession:
		status = 401
	case fsm.CodeUnknownAccount, fsm.CodeUnknownUser:
		status = 404
	case fsm.CodeInvalidCommand:
		status = 400
	case fsm.CodeUnknownOrder:
		status = 404
	case fsm.CodeNotOwner:
		status = 403
	}
	return &APIError{Status: status, Code: res.Code, Message: res.Message}
}

// replyApplied answers a write: the error for a failure or a business
// rejection, else status with the view built from the result (a missing
// view is an internal error naming what was expected).
func replyApplied(w http.ResponseWriter, status int, res *fsm.Result, err error, what string, view func(*fsm.Result) any) {
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if res.Code != fsm.CodeOK {
		writeError(w, resultError(res))
		return
	}
	v := view(res)
	if v == nil {
		writeError(w, &APIError{Status: 500, Code: CodeInternal, Message: "command applied without a " + what + " result"})
		return
	}
	writeJSON(w, status, v)
}

// decodeBody reads a JSON body with a size limit, rejecting unknown fields
// and trailing data, with messages that name the problem.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *APIError {
	r.Body = http.MaxBytesReader(w, r.Body, MaxJSONBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &APIError{Status: 413, Code: CodeBodyTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", MaxJSONBody)}
		case errors.As(err, &ute) && ute.Field == "":
			return &APIError{Status: 400, Code: CodeBadJSON, Message: fmt.Sprintf("request body must be a JSON object, got %s", ute.Value)}
		case errors.As(err, &ute):
			return &APIError{Status: 400, Code: CodeBadJSON, Message: fmt.Sprintf("field %q must be a %s", ute.Field, ute.Type)}
		case errors.Is(err, io.EOF):
			return &APIError{Status: 400, Code: CodeBadJSON, Message: "request body is empty; expected a JSON object"}
		}
		return &APIError{Status: 400, Code: CodeBadJSON, Message: "malformed JSON body: " + err.Error()}
	}
	if dec.More() {
		return &APIError{Status: 400, Code: CodeBadJSON, Message: "malformed JSON body: trailing data after the object"}
	}
	return nil
}

func badField(field string, err error) *APIError {
	return &APIError{Status: 400, Code: CodeBadRequest, Message: field + ": " + err.Error()}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.b.Ready(); err != nil {
		writeError(w, &APIError{Status: 503, Code: CodeUnavailable, Message: err.Error()})
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

type authed func(w http.ResponseWriter, r *http.Request, p Principal)

func (s *Server) auth(h authed) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, &APIError{Status: 401, Code: CodeUnauthenticated, Message: "missing bearer token: log in first"})
			return
		}
		p, err := s.b.Authenticate(r.Context(), tok)
		if err != nil {
			writeError(w, toAPIError(err))
			return
		}
		s.b.CountRequest()
		h(w, r, p)
	}
}

func (s *Server) internal(h http.HandlerFunc) http.HandlerFunc {
	return s.clientCert(true, func(w http.ResponseWriter, r *http.Request) {
		want := s.b.ClusterKey()
		got := r.Header.Get(HeaderClusterKey)
		if want == "" || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
			writeError(w, &APIError{Status: 403, Code: CodeForbidden, Message: "internal endpoint: bad or missing cluster key"})
			return
		}
		h(w, r)
	})
}

// clientCert guards the endpoints that change the cluster or speak for a
// node (join, remove, leadership transfer, the internal ones): on a node
// serving TLS they need a client certificate its CA verified, which the
// other nodes present and an operator passes with --tls-cert; with
// nodeOnly (the internal endpoints) it must be a node's certificate, not
// an operator's. Plaintext (--insecure) cannot tell who calls;
// docs/operations.md says so.
// The certificate is also checked against the revocation list the node
// holds now, so a keep-alive connection set up before a revocation was
// loaded gets no further either.
func (s *Server) clientCert(nodeOnly bool, h http.HandlerFunc) http.HandlerFunc {
	rc, _ := s.b.(RevocationChecker)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			chains := r.TLS.VerifiedChains
			if len(chains) == 0 || (nodeOnly && !IsNodeCert(chains[0][0])) {
				want := "a client certificate signed by the cluster's CA (--tls-cert and --tls-key)"
				if nodeOnly {
					want = "a node certificate signed by the cluster's CA"
				}
				writeError(w, &APIError{Status: 403, Code: CodeClientCertRequired, Message: r.URL.Path + ": needs " + want})
				return
			}
			if leaf := chains[0][0]; rc != nil && rc.Revoked(leaf) {
				writeError(w, &APIError{Status: 403, Code: CodeCertRevoked, Message: fmt.Sprintf("%s: certificate %q (serial %s) is revoked", r.URL.Path, leaf.Subject.CommonName, SerialHex(leaf.SerialNumber))})
				return
			}
		}
		h(w, r)
	}
}

// RevocationChecker is what a Backend serving TLS with a revocation list
// implements (node.Node does).
type RevocationChecker interface {
	Revoked(*x509.Certificate) bool
}

// AccountView converts a state-machine account to its API form.
func AccountView(a *trader.Account, index uint64, replay bool) Account {
	out := Account{
		Username: a.Username, AccountID: a.ID, Name: a.Name, Email: a.Email,
		Cash: a.Cash.String(), AvailableCash: a.Available().String(),
		AppliedIndex: index, Replayed: replay,
	}
	if a.CreatedAt != 0 {
		out.CreatedAt = time.Unix(0, a.CreatedAt).UTC().Format(time.RFC3339Nano)
	}
	return out
}

// writeResult answers a write: the account on success, else the rejection.
func writeResult(w http.ResponseWriter, status int, res *fsm.Result, err error) {
	replyApplied(w, status, res, err, "account", func(res *fsm.Result) any {
		if res.Account == nil {
			return map[string]any{"index": res.Index}
		}
		return AccountView(res.Account, res.Index, res.Replay)
	})
}

func checkKey(k string) *APIError {
	if len(k) > 128 {
		return &APIError{Status: 400, Code: CodeBadRequest, Message: "idempotency_key: at most 128 bytes"}
	}
	return nil
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	checks := []struct {
		field string
		err   error
	}{
		{"username", trader.ValidateUsername(req.Username)},
		{"password", trader.ValidatePassword(req.Password)},
		{"name", trader.ValidateName(req.Name)},
		{"email", trader.ValidateEmail(req.Email)},
	}
	for _, c := range checks {
		if c.err != nil {
			writeError(w, badField(c.field, c.err))
			return
		}
	}
	if e := checkKey(req.IdempotencyKey); e != nil {
		writeError(w, e)
		return
	}
	res, err := s.b.Register(r.Context(), req)
	writeResult(w, 201, res, err)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	tok, exp, res, asg, err := s.b.Login(r.Context(), req.Username, req.Password)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if res.Code != fsm.CodeOK {
		writeError(w, resultError(res))
		return
	}
	writeJSON(w, 200, LoginResponse{
		Token:     tok,
		ExpiresAt: time.Unix(0, exp).UTC().Format(time.RFC3339),
		Account:   AccountView(res.Account, res.Index, false),
		Node:      asg.Node,
		NodeAddr:  asg.NodeAddr,
		Servers:   asg.Servers,
	})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, p Principal) {
	res, err := s.b.Apply(r.Context(), &fsm.Command{Type: fsm.TypeRevokeSession, Account: p.AccountID, TokenHash: p.TokenHash})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if res.Code != fsm.CodeOK {
		writeError(w, resultError(res))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) reassign(w http.ResponseWriter, r *http.Request, p Principal) {
	var req ReassignRequest
	if r.ContentLength != 0 {
		if e := decodeBody(w, r, &req); e != nil {
			writeError(w, e)
			return
		}
	}
	asg, err := s.b.Reassign(r.Context(), p, req.Unreachable)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, asg)
}

// status serves this node's status; ?fresh=true hashes the state as of
// now instead of reusing a walk up to a second old.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	fresh := false
	if v := r.URL.Query().Get("fresh"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, toAPIError(fmt.Errorf("%w: fresh must be true or false, got %q", ErrBadRequest, v)))
			return
		}
		fresh = b
	}
	if fresh {
		writeJSON(w, 200, s.b.FreshStatus())
		return
	}
	writeJSON(w, 200, s.b.Status())
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, p Principal) {
	node := p.Node
	if node == "" {
		node = s.b.NodeID()
	}
	writeJSON(w, 200, WhoAmI{
		Username: p.Username, AccountID: p.AccountID, Node: node, ServedBy: s.b.NodeID(),
		ExpiresAt: time.Unix(0, p.Expires).UTC().Format(time.RFC3339),
	})
}

func (s *Server) readAccount(w http.ResponseWriter, r *http.Request, id uint64) {
	c, err := ParseConsistency(r.URL.Query().Get("consistency"), Linearizable)
	if err != nil {
		// err reads "bad request: consistency must be ...": keep the part
		// that names the field and the accepted values.
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": ")})
		return
	}
	var out Account
	err = s.b.Read(r.Context(), c, func(v *fsm.View) error {
		a, ok := v.Account(id)
		if !ok {
			return fmt.Errorf("%w: account %d", ErrNotFound, id)
		}
		out = AccountView(a, v.AppliedIndex(), false)
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, p Principal) {
	s.readAccount(w, r, p.AccountID)
}

func (s *Server) accountByID(w http.ResponseWriter, r *http.Request, p Principal) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "account id: not a number"})
		return
	}
	if id != p.AccountID {
		writeError(w, &APIError{Status: 403, Code: CodeForbidden, Message: fmt.Sprintf("account %d belongs to another trader", id)})
		return
	}
	s.readAccount(w, r, id)
}

func (s *Server) cash(t fsm.Type) authed {
	return func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req AmountRequest
		if e := decodeBody(w, r, &req); e != nil {
			writeError(w, e)
			return
		}
		amt, err := trader.ParseCents(req.Amount)
		if err == nil {
			err = trader.ValidateAmount(amt)
		}
		if err != nil {
			writeError(w, badField("amount", err))
			return
		}
		if e := checkKey(req.IdempotencyKey); e != nil {
			writeError(w, e)
			return
		}
		res, err := s.b.Apply(r.Context(), &fsm.Command{Type: t, Account: p.AccountID, Key: req.IdempotencyKey, Amount: int64(amt)})
		writeResult(w, 200, res, err)
	}
}

func (s *Server) profile(w http.ResponseWriter, r *http.Request, p Principal) {
	var req ProfileRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	cmd := &fsm.Command{Type: fsm.TypeProfile, Account: p.AccountID, Key: req.IdempotencyKey}
	if req.Name != nil {
		if err := trader.ValidateName(*req.Name); err != nil {
			writeError(w, badField("name", err))
			return
		}
		cmd.SetName, cmd.Name = true, *req.Name
	}
	if req.Email != nil {
		if err := trader.ValidateEmail(*req.Email); err != nil {
			writeError(w, badField("email", err))
			return
		}
		cmd.SetEmail, cmd.Email = true, *req.Email
	}
	if !cmd.SetName && !cmd.SetEmail {
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "profile: give name and/or email"})
		return
	}
	if e := checkKey(req.IdempotencyKey); e != nil {
		writeError(w, e)
		return
	}
	res, err := s.b.Apply(r.Context(), cmd)
	writeResult(w, 200, res, err)
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.ID == "" || req.RaftAddr == "" || req.HTTPAddr == "" {
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "join: id, raft_addr and http_addr are required"})
		return
	}
	if err := s.b.Join(r.Context(), req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, map[string]string{})
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	var req RemoveRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.ID == "" {
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "remove: id is required"})
		return
	}
	if err := s.b.Remove(r.Context(), req.ID); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, map[string]string{})
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	var req TransferRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if err := s.b.TransferLeadership(r.Context(), req.ID); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, map[string]string{})
}

// internalApply serves a follower's batch of forwarded commands: the body
// goes to the backend as it is and its reply comes back as it is.
func (s *Server) internalApply(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxForwardedBatchBody))
	if err != nil {
		writeError(w, &APIError{Status: 413, Code: CodeBodyTooLarge, Message: fmt.Sprintf("forwarded batch larger than %d bytes", MaxForwardedBatchBody)})
		return
	}
	out, err := s.b.ApplyForwardedBatch(r.Context(), body)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(out)
}

func (s *Server) internalReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := s.b.ReadIndex(r.Context(), r.URL.Query().Get("verify") == "true")
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, ReadIndexResponse{Index: idx})
}
