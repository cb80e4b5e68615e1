package fsm

import (
	"crypto/sha256"
	"fmt"

	"github.com/hats-trading/hats/market"
)

// Type is a command's type byte. Values are explicit and only ever appended;
// a number, once used, is never reused for another meaning.
type Type uint8

// Command types.
const (
	TypeInitCluster    Type = 1 // first entry of a new cluster: its shared key
	TypeSetNode        Type = 2 // a member's HTTP and Raft address
	TypeRemoveNode     Type = 3 // forget a member's addresses
	TypeRegister       Type = 4 // new trader account
	TypeCreateSession  Type = 5 // login: store a hashed session token
	TypeRevokeSession  Type = 6 // logout
	TypeDeposit        Type = 7
	TypeWithdraw       Type = 8
	TypeProfile        Type = 9 // change name and/or email
	TypeSetInstrument  Type = 10
	TypeDepositShares  Type = 11
	TypeWithdrawShares Type = 12
	TypePlaceOrder     Type = 13
	TypeCancelOrder    Type = 14
	TypeAmendOrder     Type = 15
	TypeTick           Type = 16 // Market Engine: new reference prices and feed state
	TypeReassign       Type = 17 // move a session to another Trading Server
	// 18 is TypeBatch (batch.go): several commands in one entry.
	TypeSetRules Type = 19 // raise the state-machine rules version (rules.go)
)

var typeNames = map[Type]string{
	TypeInitCluster: "init_cluster", TypeSetNode: "set_node", TypeRemoveNode: "remove_node",
	TypeRegister: "register", TypeCreateSession: "create_session", TypeRevokeSession: "revoke_session",
	TypeDeposit: "deposit", TypeWithdraw: "withdraw", TypeProfile: "profile",
	TypeSetInstrument: "set_instrument", TypeDepositShares: "deposit_shares", TypeWithdrawShares: "withdraw_shares",
	TypePlaceOrder: "place_order", TypeCancelOrder: "cancel_order", TypeAmendOrder: "amend_order",
	TypeTick: "tick", TypeReassign: "reassign_session", TypeSetRules: "set_rules",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Command is one state machine command. Which payload fields are encoded
// depends on Type; Encode and Decode are the only place that knows.
//
// Time and the idempotency scope are stamped by the leader (rule 1: Apply
// never reads a clock). Account is the authenticated actor, 0 for
// anonymous commands such as register.
type Command struct {
	Type    Type
	Time    int64  // leader-stamped, unix nanoseconds
	Account uint64 // acting account; 0 when anonymous
	Key     string // idempotency key; "" means none

	Username string
	PassHash []byte
	Name     string
	Email    string
	SetName  bool
	SetEmail bool
	Amount   int64 // cents

	TokenHash []byte // sha256 of the session token
	Expires   int64  // unix nanoseconds

	NodeID     string
	RaftAddr   string
	HTTPAddr   string
	GossipAddr string

	ClusterKey string

	// Exchange fields. Prices are cents, quantities shares.
	Symbol   string
	ClientID string // client order ID
	OrderID  uint64
	Side     uint8 // market.Side
	OrdType  uint8 // market.Type
	TIF      uint8 // market.TIF
	PostOnly bool
	Qty      int64
	Limit    int64
	Stop     int64
	Price    int64 // instrument reference price

	// Market Engine tick.
	TickSeq   uint64
	FeedKind  string
	FeedState []byte
	Prices    []market.TickPrice
	MMSpread  int64 // market-making spread in basis points
	MMSize    int64 // market-making quote size; 0 turns it off

	Rules uint64 // TypeSetRules: the rules version to move to
}

// Encode returns the wire form: the type byte followed by the body.
func Encode(c *Command) []byte {
	w := writer{b: make([]byte, 0, 64)}
	w.byte1(byte(c.Type))
	c.encodeBody(&w)
	return w.b
}

func (c *Command) encodeBody(w *writer) {
	w.i(c.Time)
	w.u(c.Account)
	w.str(c.Key)
	switch c.Type {
	case TypeInitCluster:
		w.str(c.ClusterKey)
	case TypeSetNode:
		w.str(c.NodeID)
		w.str(c.RaftAddr)
		w.str(c.HTTPAddr)
		w.str(c.GossipAddr)
	case TypeRemoveNode:
		w.str(c.NodeID)
	case TypeRegister:
		w.str(c.Username)
		w.bytes(c.PassHash)
		w.str(c.Name)
		w.str(c.Email)
	case TypeCreateSession:
		w.str(c.Username)
		w.bytes(c.TokenHash)
		w.i(c.Expires)
		w.str(c.NodeID)
	case TypeReassign:
		w.bytes(c.TokenHash)
		w.str(c.NodeID)
	case TypeRevokeSession:
		w.bytes(c.TokenHash)
	case TypeDeposit, TypeWithdraw:
		w.i(c.Amount)
	case TypeProfile:
		w.boolean(c.SetName)
		w.str(c.Name)
		w.boolean(c.SetEmail)
		w.str(c.Email)
	case TypeSetInstrument:
		w.str(c.Symbol)
		w.str(c.Name)
		w.i(c.Price)
	case TypeDepositShares, TypeWithdrawShares:
		w.str(c.Symbol)
		w.i(c.Qty)
	case TypePlaceOrder:
		w.str(c.ClientID)
		w.str(c.Symbol)
		w.byte1(c.Side)
		w.byte1(c.OrdType)
		w.byte1(c.TIF)
		w.boolean(c.PostOnly)
		w.i(c.Qty)
		w.i(c.Limit)
		w.i(c.Stop)
	case TypeCancelOrder:
		w.u(c.OrderID)
	case TypeAmendOrder:
		w.u(c.OrderID)
		w.i(c.Qty)
		w.i(c.Limit)
	case TypeTick:
		w.u(c.TickSeq)
		w.str(c.FeedKind)
		w.bytes(c.FeedState)
		w.u(uint64(len(c.Prices)))
		for _, p := range c.Prices {
			w.str(p.Symbol)
			w.i(p.Price)
		}
		w.i(c.MMSpread)
		w.i(c.MMSize)
	case TypeSetRules:
		w.u(c.Rules)
	}
}

// Decode parses what Encode produced. Unknown types and malformed bodies are
// errors wrapping ErrCorrupt.
func Decode(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrCorrupt)
	}
	c := &Command{Type: Type(b[0])}
	if _, ok := typeNames[c.Type]; !ok {
		return nil, fmt.Errorf("%w: unknown command type %d", ErrCorrupt, b[0])
	}
	r := reader{b: b[1:]}
	c.Time = r.i()
	c.Account = r.u()
	c.Key = r.str()
	switch c.Type {
	case TypeInitCluster:
		c.ClusterKey = r.str()
	case TypeSetNode:
		c.NodeID = r.str()
		c.RaftAddr = r.str()
		c.HTTPAddr = r.str()
		c.GossipAddr = r.str()
	case TypeRemoveNode:
		c.NodeID = r.str()
	case TypeRegister:
		c.Username = r.str()
		c.PassHash = r.bytes()
		c.Name = r.str()
		c.Email = r.str()
	case TypeCreateSession:
		c.Username = r.str()
		c.TokenHash = r.bytes()
		c.Expires = r.i()
		c.NodeID = r.str()
	case TypeReassign:
		c.TokenHash = r.bytes()
		c.NodeID = r.str()
	case TypeRevokeSession:
		c.TokenHash = r.bytes()
	case TypeDeposit, TypeWithdraw:
		c.Amount = r.i()
	case TypeProfile:
		c.SetName = r.boolean()
		c.Name = r.str()
		c.SetEmail = r.boolean()
		c.Email = r.str()
	case TypeSetInstrument:
		c.Symbol = r.str()
		c.Name = r.str()
		c.Price = r.i()
	case TypeDepositShares, TypeWithdrawShares:
		c.Symbol = r.sym()
		c.Qty = r.i()
	case TypePlaceOrder:
		c.ClientID = r.str()
		c.Symbol = r.sym()
		c.Side = r.byte1()
		c.OrdType = r.byte1()
		c.TIF = r.byte1()
		c.PostOnly = r.boolean()
		c.Qty = r.i()
		c.Limit = r.i()
		c.Stop = r.i()
	case TypeCancelOrder:
		c.OrderID = r.u()
	case TypeAmendOrder:
		c.OrderID = r.u()
		c.Qty = r.i()
		c.Limit = r.i()
	case TypeTick:
		c.TickSeq = r.u()
		c.FeedKind = r.str()
		c.FeedState = r.bytes()
		n := r.u()
		if n > uint64(len(r.b)) { // each price takes at least two bytes
			r.fail("tick prices")
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			c.Prices = append(c.Prices, market.TickPrice{Symbol: r.sym(), Price: r.i()})
		}
		c.MMSpread = r.i()
		c.MMSize = r.i()
	case TypeSetRules:
		c.Rules = r.u()
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("decode %s: %w", c.Type, err)
	}
	return c, nil
}

// digest identifies a command's intent independent of when it was stamped,
// so a retry with the same idempotency key can be told apart from a
// different request that reuses the key.
func digest(c *Command) [32]byte {
	cp := *c
	cp.Time = 0
	cp.Expires = 0
	cp.PassHash = nil // bcrypt salts differ between retries of one register
	return sha256.Sum256(Encode(&cp))
}
