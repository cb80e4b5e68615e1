package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// TokenBytes is the size of a session token: 256 random bits.
const TokenBytes = 32

var (
	dummyOnce sync.Once
	dummyHash []byte
)

// Register implements transport.Backend. The password is hashed here, on
// the node that received it, so only the bcrypt hash enters the log.
func (n *Node) Register(ctx context.Context, req transport.RegisterRequest) (*fsm.Result, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), n.cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("%w: password: %v", transport.ErrBadRequest, err)
	}
	return n.Apply(ctx, &fsm.Command{
		Type: fsm.TypeRegister, Key: req.IdempotencyKey,
		Username: req.Username, PassHash: hash, Name: req.Name, Email: req.Email,
	})
}

// Login implements transport.Backend: it checks the password against state
// at least as new as the leader's, then commits the token's hash. The token
// itself is returned once and never stored.
func (n *Node) Login(ctx context.Context, username, password string) (string, int64, *fsm.Result, transport.Assignment, error) {
	var none transport.Assignment
	var hash []byte
	found := false
	err := n.Read(ctx, transport.Leader, func(v *fsm.View) error {
		_, h, ok := v.AccountByUsername(username)
		hash, found = h, ok
		return nil
	})
	if err != nil {
		return "", 0, nil, none, err
	}
	if !found {
		// Spend the same time as a real check so timing does not reveal
		// which usernames exist.
		dummyOnce.Do(func() { dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not-a-password"), n.cfg.BcryptCost) })
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return "", 0, nil, none, fmt.Errorf("%w: wrong username or password", transport.ErrUnauthenticated)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return "", 0, nil, none, fmt.Errorf("%w: wrong username or password", transport.ErrUnauthenticated)
	}
	ts, servers, err := n.chooseTS("")
	if err != nil {
		return "", 0, nil, none, err
	}
	raw := make([]byte, TokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", 0, nil, none, err
	}
	th := sha256.Sum256(raw)
	cmd := &fsm.Command{Type: fsm.TypeCreateSession, Username: username, TokenHash: th[:], NodeID: ts.ID}
	res, err := n.Apply(ctx, cmd)
	if err != nil {
		return "", 0, nil, none, err
	}
	return hex.EncodeToString(raw), res.Expires, res, transport.Assignment{Node: ts.ID, NodeAddr: ts.HTTPAddr, Servers: servers}, nil
}

// Authenticate implements transport.Backend. A token unknown to this node's
// state may belong to a login not yet replicated here, so a miss is retried
// once after catching up with the leader.
func (n *Node) Authenticate(ctx context.Context, token string) (transport.Principal, error) {
	raw, err := hex.DecodeString(token)
	if err != nil || len(raw) != TokenBytes {
		return transport.Principal{}, fmt.Errorf("%w: malformed session token: log in again", transport.ErrUnauthenticated)
	}
	th := sha256.Sum256(raw)
	lookup := func(v *fsm.View) (transport.Principal, bool) {
		s, ok := v.Session(th[:])
		if !ok {
			return transport.Principal{}, false
		}
		p := transport.Principal{AccountID: s.Account, Expires: s.Expires, TokenHash: th[:], Node: s.Node}
		if a, ok := v.Account(s.Account); ok {
			p.Username = a.Username
		}
		return p, true
	}
	var p transport.Principal
	found := false
	_ = n.fsm.View(func(v *fsm.View) error { p, found = lookup(v); return nil })
	if !found {
		if err := n.Read(ctx, transport.Leader, func(v *fsm.View) error { p, found = lookup(v); return nil }); err != nil {
			return transport.Principal{}, err
		}
	}
	if !found {
		return transport.Principal{}, fmt.Errorf("%w: unknown or revoked session token: log in again", transport.ErrUnauthenticated)
	}
	if p.Expires <= time.Now().UnixNano() {
		return transport.Principal{}, fmt.Errorf("%w: session expired: log in again", transport.ErrUnauthenticated)
	}
	return p, nil
}
