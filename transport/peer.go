package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Internal endpoints and the header that authenticates node-to-node calls
// with the cluster key replicated in the state machine.
const (
	PathInternalReadIndex = "/v1/internal/readindex"
	PathInternalApplyMany = "/v1/internal/apply-batch"
	HeaderClusterKey      = "X-Hats-Cluster-Key"
	maxResponseBytes      = 4 << 20
)

// Peer makes node-to-node calls: forwarding writes and read-index requests
// to the leader, joins, and status probes.
type Peer struct {
	hc     *http.Client
	stream *http.Client // same transport, no overall timeout: forward streams
	scheme string
}

// NewPeer returns a Peer whose requests each time out after timeout. With
// nodeTLS it calls the other nodes over https, verifying them against the
// cluster's CA and presenting this node's certificate.
func NewPeer(timeout time.Duration, dial DialFunc, nodeTLS *NodeTLS) *Peer {
	tr := &http.Transport{
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	if dial == nil {
		dial = (&net.Dialer{Timeout: timeout}).DialContext
	}
	tr.DialContext = dial
	scheme := "http"
	if nodeTLS != nil {
		tr.DialTLSContext = nodeTLS.Dial(dial)
		scheme = "https"
	}
	return &Peer{hc: &http.Client{Timeout: timeout, Transport: tr}, stream: &http.Client{Transport: tr}, scheme: scheme}
}

// CloseIdle drops pooled connections (used when the leader changes).
func (p *Peer) CloseIdle() { p.hc.CloseIdleConnections() }

// isDialError reports whether err happened before the request could have
// reached the peer, so the write certainly did not happen.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (p *Peer) do(ctx context.Context, method, addr, path, key string, body []byte, contentType string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.scheme+"://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set(HeaderClusterKey, key)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		if isDialError(err) {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, addr, err)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrOutcomeUnknown, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: reading reply from %s: %v", ErrOutcomeUnknown, addr, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, parseAPIError(resp.StatusCode, data)
	}
	return data, nil
}

func parseAPIError(status int, data []byte) *APIError {
	var eb ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Code == "" {
		return &APIError{Status: status, Code: CodeInternal, Message: fmt.Sprintf("HTTP %d: %.200s", status, data)}
	}
	eb.Error.Status = status
	return &eb.Error
}

// ForwardApplyBatch sends a batch of encoded commands (fsm.EncodeBatch) to
// the leader at addr and returns its reply, one outcome per command. An
// error wrapping ErrOutcomeUnknown means any of them may have been applied.
func (p *Peer) ForwardApplyBatch(ctx context.Context, addr, clusterKey string, batch []byte) ([]byte, error) {
	return p.do(ctx, http.MethodPost, addr, PathInternalApplyMany, clusterKey, batch, "application/octet-stream")
}

// ReadIndex asks the leader at addr for an index that a read must wait for;
// with verify the leader first confirms it still leads with a quorum.
func (p *Peer) ReadIndex(ctx context.Context, addr, clusterKey string, verify bool) (uint64, error) {
	data, err := p.do(ctx, http.MethodGet, addr, PathInternalReadIndex+"?verify="+strconv.FormatBool(verify), clusterKey, nil, "")
	if err != nil {
		return 0, err
	}
	var r ReadIndexResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, fmt.Errorf("%w: read index reply: %v", ErrUnavailable, err)
	}
	return r.Index, nil
}

func (p *Peer) postJSON(ctx context.Context, addr, path string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.do(ctx, http.MethodPost, addr, path, "", body, "application/json")
	return err
}

// Join asks the node at addr to add a member (it forwards to its leader).
func (p *Peer) Join(ctx context.Context, addr string, req JoinRequest) error {
	return p.postJSON(ctx, addr, "/v1/cluster/join", req)
}

// Remove asks the node at addr to remove a member.
func (p *Peer) Remove(ctx context.Context, addr, id string) error {
	return p.postJSON(ctx, addr, "/v1/cluster/remove", RemoveRequest{ID: id})
}

// Transfer asks the node at addr to hand leadership over.
func (p *Peer) Transfer(ctx context.Context, addr, id string) error {
	return p.postJSON(ctx, addr, "/v1/cluster/transfer-leadership", TransferRequest{ID: id})
}

// Status fetches the node status served at addr.
func (p *Peer) Status(ctx context.Context, addr string) (*NodeStatus, error) {
	data, err := p.do(ctx, http.MethodGet, addr, "/v1/status", "", nil, "")
	if err != nil {
		return nil, err
	}
	var st NodeStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w: status from %s: %v", ErrUnavailable, addr, err)
	}
	return &st, nil
}
