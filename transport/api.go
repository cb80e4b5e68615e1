// Package transport holds HATS's wire: the client HTTP/JSON API (server
// handlers and the Go client library), the node-to-node calls used for
// leader forwarding, and the Raft TCP stream layer. It depends on the narrow
// Backend interface, never on node internals.
package transport

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of the wire layer. APIError values unwrap to these by code
// so callers match them with errors.Is.
var (
	ErrOutcomeUnknown  = errors.New("outcome unknown")
	ErrNoLeader        = errors.New("no leader")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrBadRequest      = errors.New("bad request")
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	// ErrIncompatible: a node's release cannot apply the cluster's
	// state-machine rules (a join refused until it is upgraded).
	ErrIncompatible = errors.New("incompatible release")
	ErrUnavailable  = errors.New("unavailable")
	ErrNoNodes      = errors.New("no reachable node")
)

// Stable error codes in JSON error bodies: {"error":{"code":..., "message":...}}.
// Business codes from the state machine (insufficient_funds, ...) are passed
// through as they are.
const (
	CodeOutcomeUnknown  = "outcome_unknown"
	CodeNoLeader        = "no_leader"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	// CodeClientCertRequired: an admin or internal endpoint of a node
	// that serves TLS was called without a client certificate from the
	// cluster's CA.
	CodeClientCertRequired = "client_cert_required"
	// CodeCertRevoked: the client certificate is on the revocation list
	// the node holds (--tls-crl).
	CodeCertRevoked  = "certificate_revoked"
	CodeBadRequest   = "bad_request"
	CodeBadJSON      = "malformed_json"
	CodeBodyTooLarge = "body_too_large"
	CodeNotFound     = "not_found"
	CodeUnavailable  = "unavailable"
	CodeNodeIDInUse  = "node_id_in_use"
	// CodeIncompatible: see ErrIncompatible.
	CodeIncompatible = "incompatible_release"
	CodeInternal     = "internal"
	// CodeLeaderMoved is not an error: an order stream's notice, tagged
	// "", that its node now names another leader (docs/api.md).
	CodeLeaderMoved = "leader_moved"
)

// Consistency is a read's consistency level.
type Consistency string

// Read consistency levels (BRIEF rule 5).
const (
	Stale        Consistency = "stale"        // this node's local state
	Leader       Consistency = "leader"       // at least as new as the leader's applied state
	Linearizable Consistency = "linearizable" // read index confirmed by a quorum
)

// ParseConsistency validates a consistency name; "" yields def.
func ParseConsistency(s string, def Consistency) (Consistency, error) {
	switch Consistency(s) {
	case "":
		return def, nil
	case Stale, Leader, Linearizable:
		return Consistency(s), nil
	}
	return "", fmt.Errorf("%w: consistency must be stale, leader or linearizable, got %q", ErrBadRequest, s)
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error APIError `json:"error"`
}

// APIError is an error returned by the HTTP API.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Leader  string `json:"leader,omitempty"` // leader's HTTP address, when known
}

func (e *APIError) Error() string { return e.Message }

// Unwrap maps the code to a sentinel.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case CodeOutcomeUnknown:
		return ErrOutcomeUnknown
	case CodeNoLeader:
		return ErrNoLeader
	case CodeUnauthenticated:
		return ErrUnauthenticated
	case CodeForbidden, CodeClientCertRequired, CodeCertRevoked:
		return ErrForbidden
	case CodeNotFound:
		return ErrNotFound
	case CodeUnavailable:
		return ErrUnavailable
	case CodeNodeIDInUse, "username_taken", "idempotency_key_reused":
		return ErrConflict
	case CodeIncompatible:
		return ErrIncompatible
	case CodeBadRequest, CodeBadJSON, CodeBodyTooLarge:
		return ErrBadRequest
	}
	return nil
}

// RegisterRequest is POST /v1/users.
type RegisterRequest struct {
	Username       string `json:"username"`
	Password       string `json:"password"`
	Name           string `json:"name,omitempty"`
	Email          string `json:"email,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// LoginRequest is POST /v1/sessions.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// LoginResponse carries the session token (shown once; stored only hashed)
// and the Trading Server the client is assigned to.
type LoginResponse struct {
	Token     string   `json:"token"`
	ExpiresAt string   `json:"expires_at"` // RFC 3339
	Account   Account  `json:"account"`
	Node      string   `json:"node"`      // assigned Trading Server's id
	NodeAddr  string   `json:"node_addr"` // its HTTP address
	Servers   []Member `json:"servers"`   // every Trading Server the LDS knows
}

// Assignment is a client's Trading Server, from login or a reassignment
// (POST /v1/sessions/current/reassign).
type Assignment struct {
	Node     string   `json:"node"`
	NodeAddr string   `json:"node_addr"`
	Servers  []Member `json:"servers"`
}

// ReassignRequest names the server that stopped answering, if known.
type ReassignRequest struct {
	Unreachable string `json:"unreachable,omitempty"`
}

// AmountRequest is POST /v1/account/deposit and /v1/account/withdraw.
type AmountRequest struct {
	Amount         string `json:"amount"` // decimal with at most 2 places
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// ProfileRequest is POST /v1/account/profile; nil fields are left unchanged.
type ProfileRequest struct {
	Name           *string `json:"name,omitempty"`
	Email          *string `json:"email,omitempty"`
	IdempotencyKey string  `json:"idempotency_key,omitempty"`
}

// Account is a trader's account as the API shows it. Money is a decimal
// string with two places.
type Account struct {
	Username      string `json:"username"`
	AccountID     uint64 `json:"account_id"`
	Name          string `json:"name"`
	Email         string `json:"email"`
	Cash          string `json:"cash"`
	AvailableCash string `json:"available_cash"`
	CreatedAt     string `json:"created_at,omitempty"`
	AppliedIndex  uint64 `json:"applied_index,omitempty"` // state index this view reflects
	Replayed      bool   `json:"replayed,omitempty"`      // true when an idempotent retry returned the first result
}

// WhoAmI is GET /v1/whoami.
type WhoAmI struct {
	Username  string `json:"username"`
	AccountID uint64 `json:"account_id"`
	Node      string `json:"node"`      // assigned Trading Server
	ServedBy  string `json:"served_by"` // node that answered this request
	ExpiresAt string `json:"expires_at"`
}

// JoinRequest is POST /v1/cluster/join.
type JoinRequest struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	HTTPAddr   string `json:"http_addr"`
	GossipAddr string `json:"gossip_addr,omitempty"`
}

// RemoveRequest is POST /v1/cluster/remove.
type RemoveRequest struct {
	ID string `json:"id"`
}

// TransferRequest is POST /v1/cluster/transfer-leadership; empty ID lets
// Raft pick the most up-to-date follower.
type TransferRequest struct {
	ID string `json:"id,omitempty"`
}

// NodeStatus is one node's view of itself (GET /v1/status), also an entry
// of ClusterStatus.
type NodeStatus struct {
	ID           string `json:"id"`
	RaftAddr     string `json:"raft_addr"`
	HTTPAddr     string `json:"http_addr"`
	State        string `json:"state"` // Leader, Follower, Candidate, Shutdown, or "unreachable"
	Voter        bool   `json:"voter"`
	Term         uint64 `json:"term"`
	Leader       string `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	// FirstIndex is the oldest entry still in the node's Raft log (older
	// ones are compacted into snapshots); a follower that needs one below
	// it is sent a snapshot instead.
	FirstIndex   uint64 `json:"first_index,omitempty"`
	RaftLogStore string `json:"raft_log_store,omitempty"` // wal or boltdb
	// Early append (leaders only): new entries this node sent to followers
	// while writing them itself, and how many of those the followers took.
	EarlyAppendsSent     uint64 `json:"early_appends_sent,omitempty"`
	EarlyAppendsAccepted uint64 `json:"early_appends_accepted,omitempty"`
	EarlyAnswers         uint64 `json:"early_answers,omitempty"`
	// The state file's checkpoint: the applied index it holds (reads see
	// applied_index; the Raft log holds the rest until the checkpoint),
	// layers queued for the checkpoint writer, and how often applying
	// waited for it since the node started (non-zero: the disk is behind).
	CheckpointIndex uint64 `json:"checkpoint_index,omitempty"`
	CheckpointQueue int    `json:"checkpoint_queue"`
	ApplyWaits      uint64 `json:"apply_waits"`
	StateHash       string `json:"state_hash"`
	// Rules is the state-machine rules version in force in this node's
	// applied state; MaxRules the highest its release applies (a rolling
	// upgrade is complete when every node's Rules equals the MaxRules of
	// the new release).
	Rules    uint64 `json:"rules"`
	MaxRules uint64 `json:"max_rules"`
	// RulesPending (leaders): what holds back a raise to MaxRules, such
	// as a member still on an older release.
	RulesPending string `json:"rules_pending,omitempty"`
	HashIndex    uint64 `json:"hash_index"` // applied index the hash was taken at
	Error        string `json:"error,omitempty"`

	Roles        []string      `json:"roles,omitempty"`  // LDS, TS, ME
	Sessions     int64         `json:"sessions"`         // client sessions assigned to this Trading Server
	Gossip       string        `json:"gossip,omitempty"` // this node in its own gossip view: alive, or disabled
	MarketEngine *EngineStatus `json:"market_engine_status,omitempty"`
}

// EngineStatus is the Market Engine's health as one node sees it.
type EngineStatus struct {
	Running     bool      `json:"running"`
	Feed        string    `json:"feed"`
	LastTickSeq uint64    `json:"last_tick_seq"`
	LastTick    time.Time `json:"last_tick"`
	Ticks       uint64    `json:"ticks"`         // committed by this node
	Errors      uint64    `json:"errors"`        // failed fetches and commits on this node
	RejectedRow uint64    `json:"rejected_rows"` // bad feed rows never committed
	Stale       bool      `json:"stale"`         // no tick for more than 3 intervals
}

// Member is one node in the LDS view (the gossip ring).
type Member struct {
	ID         string   `json:"id"`
	HTTPAddr   string   `json:"http_addr"`
	GossipAddr string   `json:"gossip_addr"`
	Roles      []string `json:"roles"`
	RaftState  string   `json:"raft_state"`
	Health     string   `json:"health"`  // alive, suspect, dead
	Healthy    bool     `json:"healthy"` // alive and ready to serve
	Sessions   int64    `json:"sessions"`
	RPS        float64  `json:"rps"`
}

// ClusterStatus is GET /v1/cluster/status.
type ClusterStatus struct {
	Leader       string       `json:"leader"`
	Term         uint64       `json:"term"`
	MarketEngine string       `json:"market_engine"` // id of the node running it, "" when none
	Nodes        []NodeStatus `json:"nodes"`
}

// ReadIndexResponse is GET /v1/internal/readindex.
type ReadIndexResponse struct {
	Index uint64 `json:"index"`
}
