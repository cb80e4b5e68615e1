package fsm

import (
	"errors"
	"fmt"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// Business rejections. Apply returns them as values inside a Result (rule 7):
// the entry is committed and deterministic, the caller learns why nothing
// changed. Result.Err maps a code back to its sentinel for errors.Is.
var (
	ErrUsernameTaken      = errors.New("username already taken")
	ErrUnknownAccount     = errors.New("unknown account")
	ErrUnknownUser        = errors.New("unknown user")
	ErrUnknownSession     = errors.New("unknown session")
	ErrIdempotencyReused  = errors.New("idempotency key reused for a different request")
	ErrAlreadyInitialized = errors.New("cluster already initialized")
	ErrInvalidCommand     = errors.New("invalid command")
)

// Stable result codes, shared with the HTTP API's error bodies.
const (
	CodeOK                 = ""
	CodeBadAmount          = "bad_amount"
	CodeInsufficientFunds  = "insufficient_funds"
	CodeOverflow           = "balance_overflow"
	CodeBadField           = "bad_field"
	CodeUsernameTaken      = "username_taken"
	CodeUnknownAccount     = "unknown_account"
	CodeUnknownUser        = "unknown_user"
	CodeUnknownSession     = "unknown_session"
	CodeIdempotencyReused  = "idempotency_key_reused"
	CodeAlreadyInitialized = "already_initialized"
	CodeInvalidCommand     = "invalid_command"
	CodeUnknownSymbol      = "unknown_symbol"
	CodeBadQuantity        = "bad_quantity"
	CodeBadPrice           = "bad_price"
	CodeBadOrder           = "bad_order"
	CodeWouldTake          = "post_only_would_take"
	CodeCannotFill         = "fok_cannot_fill"
	CodeBeyondCollar       = "beyond_collar"
	CodeUnknownOrder       = "unknown_order"
	CodeOrderDone          = "order_not_open"
	CodeNotOwner           = "not_owner"
	CodeInsufficientShares = "insufficient_shares"
	CodeBadInstrument      = "bad_instrument"
	CodeStaleTick          = "stale_tick"
)

var codeErrs = []struct {
	code string
	err  error
}{
	{CodeBadAmount, trader.ErrBadAmount},
	{CodeInsufficientFunds, trader.ErrInsufficientFunds},
	{CodeOverflow, trader.ErrOverflow},
	{CodeBadField, trader.ErrBadName},
	{CodeBadField, trader.ErrBadEmail},
	{CodeBadField, trader.ErrBadUsername},
	{CodeUsernameTaken, ErrUsernameTaken},
	{CodeUnknownAccount, ErrUnknownAccount},
	{CodeUnknownUser, ErrUnknownUser},
	{CodeUnknownSession, ErrUnknownSession},
	{CodeIdempotencyReused, ErrIdempotencyReused},
	{CodeAlreadyInitialized, ErrAlreadyInitialized},
	{CodeInvalidCommand, ErrInvalidCommand},
	{CodeUnknownSymbol, market.ErrUnknownSymbol},
	{CodeBadQuantity, market.ErrBadQuantity},
	{CodeBadPrice, market.ErrBadPrice},
	{CodeBadOrder, market.ErrBadOrder},
	{CodeWouldTake, market.ErrWouldTake},
	{CodeCannotFill, market.ErrCannotFill},
	{CodeBeyondCollar, market.ErrBeyondCollar},
	{CodeUnknownOrder, market.ErrUnknownOrder},
	{CodeOrderDone, market.ErrOrderDone},
	{CodeNotOwner, ErrNotOwner},
	{CodeInsufficientShares, trader.ErrInsufficientShares},
	{CodeBadInstrument, market.ErrBadInstrument},
	{CodeStaleTick, ErrStaleTick},
}

// Result is what applying one command produced.
type Result struct {
	Index    uint64 // log index the command took effect at (the first one, for a replay)
	Code     string // CodeOK, or why the command changed nothing
	Message  string
	Account  *trader.Account  // the account after the command, when it has one
	Order    *market.Order    // the order after the command (place, cancel, amend)
	Position *trader.Position // the position after a share deposit or withdrawal
	Replay   bool             // true when this is the stored result of an earlier identical request
	Expires  int64            // create_session: the leader-stamped expiry
}

// Err returns nil for success, else an error wrapping the code's sentinel.
func (r *Result) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	for _, ce := range codeErrs {
		if ce.code == r.Code {
			return fmt.Errorf("%w: %s", ce.err, r.Message)
		}
	}
	return fmt.Errorf("%s: %s", r.Code, r.Message)
}

func reject(err error) *Result {
	for _, ce := range codeErrs {
		if errors.Is(err, ce.err) {
			return &Result{Code: ce.code, Message: err.Error()}
		}
	}
	return &Result{Code: CodeInvalidCommand, Message: err.Error()}
}

// EncodeResult serialises a result (for idempotency records and forwarding).
func EncodeResult(r *Result) []byte {
	w := writer{}
	w.u(r.Index)
	w.str(r.Code)
	w.str(r.Message)
	w.boolean(r.Replay)
	w.i(r.Expires)
	w.boolean(r.Account != nil)
	if r.Account != nil {
		encodeAccount(&w, r.Account)
	}
	w.boolean(r.Order != nil)
	if r.Order != nil {
		encodeOrder(&w, r.Order)
	}
	w.boolean(r.Position != nil)
	if r.Position != nil {
		encodePosition(&w, r.Position)
	}
	return w.b
}

// DecodeResult parses EncodeResult's output.
func DecodeResult(b []byte) (*Result, error) {
	rd := reader{b: b}
	r := &Result{Index: rd.u(), Code: rd.str(), Message: rd.str(), Replay: rd.boolean(), Expires: rd.i()}
	if rd.boolean() {
		r.Account = decodeAccount(&rd)
	}
	if rd.boolean() {
		r.Order = decodeOrder(&rd)
	}
	if rd.boolean() {
		r.Position = decodePosition(&rd)
	}
	if err := rd.done(); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	return r, nil
}

func encodeAccount(w *writer, a *trader.Account) {
	w.u(a.ID)
	w.str(a.Username)
	w.str(a.Name)
	w.str(a.Email)
	w.i(int64(a.Cash))
	w.i(int64(a.Reserved))
	w.i(a.CreatedAt)
}

func decodeAccount(r *reader) *trader.Account {
	return &trader.Account{
		ID: r.u(), Username: r.str(), Name: r.str(), Email: r.str(),
		Cash: trader.Cents(r.i()), Reserved: trader.Cents(r.i()), CreatedAt: r.i(),
	}
}
