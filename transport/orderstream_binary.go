package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// The order stream's binary encoding (Content-Type
// application/x-hats-order-stream). It carries exactly the fields of the
// NDJSON encoding, in a fixed order, so validation, results and errors are
// the same; it only spares both ends reflection-based JSON. Every message is
// a frame: its length (a uvarint), then its body. In a body, an unsigned
// number is a uvarint, a signed one a zig-zag varint, a string its length
// (a uvarint) and its bytes, a flag set one byte. See docs/api.md.
const (
	StreamContentJSON   = "application/x-ndjson"
	StreamContentBinary = "application/x-hats-order-stream"
)

// Operation codes of a binary request.
const (
	streamOpPlace  byte = 1
	streamOpCancel byte = 2
)

// Flags of a binary reply, and of its order.
const (
	replyHasError byte = 1 << iota
	replyHasOrder
)

const (
	orderPostOnly byte = 1 << iota
	orderTriggered
	orderReplayed
)

// maxStreamReply bounds a reply frame the client accepts.
const maxStreamReply = 1 << 20

// errStreamFrame reports a binary frame whose body does not decode.
var errStreamFrame = errors.New("malformed order stream frame")

// mediaType is a Content-Type's media type, lower-cased, without parameters.
func mediaType(ct string) string {
	t, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendStreamRequest appends req's body (without the frame length).
func appendStreamRequest(b []byte, req *StreamRequest) ([]byte, error) {
	b = appendStr(b, req.Tag)
	switch req.Op {
	case "", "place":
		if req.Order == nil {
			return nil, errors.New("op place needs an order")
		}
		o := req.Order
		b = append(b, streamOpPlace)
		b = appendStr(b, o.ClientID)
		b = appendStr(b, o.Symbol)
		b = appendStr(b, o.Side)
		b = appendStr(b, o.Type)
		b = appendStr(b, o.TIF)
		b = binary.AppendVarint(b, o.Quantity)
		b = appendStr(b, o.LimitPrice)
		b = appendStr(b, o.StopPrice)
		var fl byte
		if o.PostOnly {
			fl |= orderPostOnly
		}
		return append(b, fl), nil
	case "cancel":
		return binary.AppendUvarint(append(b, streamOpCancel), req.OrderID), nil
	}
	return nil, fmt.Errorf("op must be place or cancel, got %q", req.Op)
}

// appendStreamReply appends rep's body (without the frame length).
func appendStreamReply(b []byte, rep *StreamReply) []byte {
	b = appendStr(b, rep.Tag)
	b = binary.AppendUvarint(b, uint64(rep.Status))
	var fl byte
	if rep.Error != nil {
		fl |= replyHasError
	}
	if rep.Order != nil {
		fl |= replyHasOrder
	}
	b = append(b, fl)
	if e := rep.Error; e != nil {
		b = appendStr(appendStr(appendStr(b, e.Code), e.Message), e.Leader)
	}
	if o := rep.Order; o != nil {
		b = appendOrder(b, o)
	}
	return b
}

// appendOrder appends an order's binary form.
func appendOrder(b []byte, o *Order) []byte {
	b = binary.AppendUvarint(b, o.OrderID)
	for _, s := range [...]string{o.ClientID, o.Symbol, o.Side, o.Type, o.TIF} {
		b = appendStr(b, s)
	}
	b = binary.AppendVarint(b, o.Quantity)
	b = binary.AppendVarint(b, o.FilledQuantity)
	b = binary.AppendVarint(b, o.RemainingQuantity)
	for _, s := range [...]string{o.LimitPrice, o.StopPrice, o.AvgFillPrice, o.Status, o.Reason, o.RejectCode} {
		b = appendStr(b, s)
	}
	b = append(b, orderFlags(o.PostOnly, o.Triggered, o.Replayed))
	for _, s := range [...]string{o.CreatedAt, o.UpdatedAt, o.ExpiresAt} {
		b = appendStr(b, s)
	}
	return binary.AppendUvarint(b, o.AppliedIndex)
}

func orderFlags(postOnly, triggered, replayed bool) byte {
	var of byte
	if postOnly {
		of |= orderPostOnly
	}
	if triggered {
		of |= orderTriggered
	}
	if replayed {
		of |= orderReplayed
	}
	return of
}

// appendStreamOrderReply appends the body of a reply carrying the order
// OrderView(o, replay, index) (and apiErr, if not nil): exactly what
// appendStreamReply writes for it, formatted from the state machine's
// order directly, without building the view's strings. Every
// acknowledgement of the order stream's binary encoding takes this path.
func appendStreamOrderReply(b []byte, tag string, apiErr *APIError, o *market.Order, replay bool, index uint64) []byte {
	b = appendStr(b, tag)
	status, fl := 200, replyHasOrder
	if apiErr != nil {
		status, fl = apiErr.Status, fl|replyHasError
	}
	b = binary.AppendUvarint(b, uint64(status))
	b = append(b, fl)
	if apiErr != nil {
		b = appendStr(appendStr(appendStr(b, apiErr.Code), apiErr.Message), apiErr.Leader)
	}
	b = binary.AppendUvarint(b, o.ID)
	for _, s := range [...]string{o.ClientID, o.Symbol, o.Side.String(), o.Type.String(), o.TIF.String()} {
		b = appendStr(b, s)
	}
	var remaining int64
	if o.Status.Active() {
		remaining = o.Remaining()
	}
	b = binary.AppendVarint(b, o.Qty)
	b = binary.AppendVarint(b, o.Filled)
	b = binary.AppendVarint(b, remaining)
	var tmp [40]byte // the longest field: an RFC 3339 time with nanoseconds (35 bytes)
	for _, c := range [...]int64{o.Limit, o.Stop, o.AvgFillPrice()} {
		f := tmp[:0]
		if c != 0 { // as price(): "" for none
			f = trader.Cents(c).AppendTo(f)
		}
		b = appendBytes(b, f)
	}
	for _, s := range [...]string{o.Status.String(), o.Reason, o.RejectCode} {
		b = appendStr(b, s)
	}
	b = append(b, orderFlags(o.PostOnly, o.Triggered, replay))
	for _, ns := range [...]int64{o.Created, o.Updated, o.ExpiresAt} {
		f := tmp[:0]
		if ns != 0 { // as timeString(): "" for none
			f = time.Unix(0, ns).UTC().AppendFormat(f, time.RFC3339Nano)
		}
		b = appendBytes(b, f)
	}
	return binary.AppendUvarint(b, index)
}

// frameReader decodes a frame body. The first error sticks and later
// reads return zero values, so decoders check err once, at the end.
type frameReader struct {
	b   []byte
	err error
}

func (r *frameReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad or truncated %s", errStreamFrame, what)
	}
	r.b = nil
}

func (r *frameReader) uint(what string) uint64 { return readVarint(r, what, binary.Uvarint) }
func (r *frameReader) int(what string) int64   { return readVarint(r, what, binary.Varint) }

func readVarint[T uint64 | int64](r *frameReader, what string, decode func([]byte) (T, int)) T {
	v, n := decode(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *frameReader) byte1(what string) byte {
	if len(r.b) == 0 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *frameReader) str(what string) string {
	n := r.uint(what)
	if n > uint64(len(r.b)) {
		r.fail(what)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// end reports the first error, or trailing bytes.
func (r *frameReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d bytes after the last field", errStreamFrame, len(r.b))
	}
	return r.err
}

// decodeStreamRequest decodes a request body. A body that does not decode
// is an error; its tag is returned when it was read.
func decodeStreamRequest(body []byte) (StreamRequest, error) {
	r := frameReader{b: body}
	req := StreamRequest{Tag: r.str("tag")}
	switch op := r.byte1("op"); {
	case r.err != nil:
	case op == streamOpPlace:
		o := &OrderRequest{ClientID: r.str("client_id"), Symbol: r.str("symbol"), Side: r.str("side"),
			Type: r.str("type"), TIF: r.str("tif"), Quantity: r.int("quantity"),
			LimitPrice: r.str("limit_price"), StopPrice: r.str("stop_price")}
		o.PostOnly = r.byte1("flags")&orderPostOnly != 0
		req.Op, req.Order = "place", o
	case op == streamOpCancel:
		req.Op, req.OrderID = "cancel", r.uint("order_id")
	default:
		return req, fmt.Errorf("%w: op must be %d (place) or %d (cancel), got %d", errStreamFrame, streamOpPlace, streamOpCancel, op)
	}
	return req, r.end()
}

// decodeStreamReply decodes a reply body.
func decodeStreamReply(body []byte) (StreamReply, error) {
	r := frameReader{b: body}
	rep := StreamReply{Tag: r.str("tag"), Status: int(r.uint("status"))}
	fl := r.byte1("flags")
	if fl&replyHasError != 0 {
		rep.Error = &APIError{Status: rep.Status, Code: r.str("error code"), Message: r.str("error message"), Leader: r.str("error leader")}
	}
	if fl&replyHasOrder != 0 {
		o := &Order{OrderID: r.uint("order_id"), ClientID: r.str("client_id"), Symbol: r.str("symbol"),
			Side: r.str("side"), Type: r.str("type"), TIF: r.str("tif")}
		o.Quantity, o.FilledQuantity, o.RemainingQuantity = r.int("quantity"), r.int("filled_quantity"), r.int("remaining_quantity")
		o.LimitPrice, o.StopPrice, o.AvgFillPrice = r.str("limit_price"), r.str("stop_price"), r.str("avg_fill_price")
		o.Status, o.Reason, o.RejectCode = r.str("status"), r.str("reason"), r.str("reject_code")
		of := r.byte1("order flags")
		o.PostOnly, o.Triggered, o.Replayed = of&orderPostOnly != 0, of&orderTriggered != 0, of&orderReplayed != 0
		o.CreatedAt, o.UpdatedAt, o.ExpiresAt = r.str("created_at"), r.str("updated_at"), r.str("expires_at")
		o.AppliedIndex = r.uint("applied_index")
		rep.Order = o
	}
	return rep, r.end()
}
