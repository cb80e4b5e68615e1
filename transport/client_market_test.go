package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// orderServer is a fake node for the order endpoints: each handler gets
// the request number of its route (1-based).
type orderServer struct {
	mu        sync.Mutex
	counts    map[string]int
	clientIDs []string
}

func (s *orderServer) hit(route string, r *http.Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[string]int{}
	}
	s.counts[route]++
	if r.Method == http.MethodPost {
		var req OrderRequest
		if json.NewDecoder(r.Body).Decode(&req) == nil {
			s.clientIDs = append(s.clientIDs, req.ClientID)
		}
	}
	return s.counts[route]
}

func (s *orderServer) count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[route]
}

func Test_Client_PlaceOrder_SameClientIDAcrossRetries(t *testing.T) {
	s := &orderServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.hit("post", r) == 1 {
			clWriteErr(w, 503, CodeOutcomeUnknown, "leadership lost", "")
			return
		}
		clWriteJSON(w, 200, Order{OrderID: 7, ClientID: s.clientIDs[len(s.clientIDs)-1], Status: StatusFilled, Replayed: true})
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	o, err := c.PlaceOrder(context.Background(), OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.clientIDs) != 2 || s.clientIDs[0] == "" || s.clientIDs[0] != s.clientIDs[1] {
		t.Fatalf("client IDs sent: %q", s.clientIDs)
	}
	if o.OrderID != 7 || !o.Replayed || o.ClientID != s.clientIDs[0] {
		t.Fatalf("order: %+v", o)
	}
}

func Test_Client_PlaceOrder_UnknownCarriesClientID(t *testing.T) {
	s := &orderServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hit("post", r)
		clWriteErr(w, 503, CodeOutcomeUnknown, "leadership lost", "")
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Deadline: 400 * time.Millisecond})
	_, err := c.PlaceOrder(context.Background(), OrderRequest{ClientID: "mine-1", Symbol: "AAPL", Side: "buy", Quantity: 1})
	var ou *OutcomeUnknownError
	if !errors.As(err, &ou) || ou.Key != "mine-1" || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("want outcome unknown with key mine-1, got %v", err)
	}
	for _, id := range s.clientIDs {
		if id != "mine-1" {
			t.Fatalf("client IDs sent: %q", s.clientIDs)
		}
	}
	if len(s.clientIDs) < 2 {
		t.Fatalf("not retried: %q", s.clientIDs)
	}
}

func Test_Client_PlaceOrder_RejectionReadsBackOrder(t *testing.T) {
	s := &orderServer{}
	rejected := Order{OrderID: 9, ClientID: "c-9", Status: StatusRejected, Reason: "insufficient funds: order needs 10.00", RejectCode: "insufficient_funds"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			s.hit("post", r)
			clWriteJSON(w, 422, OrderErrorBody{Error: APIError{Code: "insufficient_funds", Message: rejected.Reason}, Order: &rejected})
		case r.Method == http.MethodGet && r.URL.Query().Get("client_id") == "c-9":
			s.hit("get", r)
			clWriteJSON(w, 200, OrderList{Orders: []Order{rejected}, AppliedIndex: 5})
		default:
			clWriteErr(w, 404, CodeNotFound, "no", "")
		}
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	o, err := c.PlaceOrder(context.Background(), OrderRequest{ClientID: "c-9", Symbol: "AAPL", Side: "buy", Quantity: 1})
	var rej *OrderRejectedError
	if !errors.As(err, &rej) || rej.Order == nil || rej.Order.OrderID != 9 || o == nil || o.OrderID != 9 {
		t.Fatalf("want rejection with the order, got %+v, %v", o, err)
	}
	if ErrorCode(err) != "insufficient_funds" || !strings.Contains(err.Error(), "order 9 rejected") {
		t.Fatalf("rejection error: code %q, %v", ErrorCode(err), err)
	}
	if s.count("post") != 1 || s.count("get") != 1 {
		t.Fatalf("requests: %v", s.counts)
	}
}

func Test_Client_Cancel_UnknownOutcomeResolvedByReading(t *testing.T) {
	for _, tc := range []struct {
		name       string
		readStatus string // what the read-back finds after the first, unanswered cancel
		wantCancel int    // cancels sent
	}{
		{"applied", StatusCancelled, 1},
		{"not applied", StatusOpen, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &orderServer{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/orders/7" {
					clWriteErr(w, 404, CodeNotFound, "no", "")
					return
				}
				switch r.Method {
				case http.MethodDelete:
					if s.hit("delete", r) == 1 {
						clWriteErr(w, 503, CodeOutcomeUnknown, "leadership lost", "")
						return
					}
					clWriteJSON(w, 200, Order{OrderID: 7, Status: StatusCancelled})
				case http.MethodGet:
					s.hit("get", r)
					clWriteJSON(w, 200, Order{OrderID: 7, Status: tc.readStatus})
				}
			}))
			defer srv.Close()
			c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
			o, err := c.Cancel(context.Background(), 7)
			if err != nil || o.Status != StatusCancelled {
				t.Fatalf("cancel: %+v, %v", o, err)
			}
			if got := s.count("delete"); got != tc.wantCancel {
				t.Fatalf("cancels sent: %d, want %d", got, tc.wantCancel)
			}
		})
	}
}

func Test_Client_Cancel_FinishedMeanwhile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			clWriteErr(w, 503, CodeOutcomeUnknown, "leadership lost", "")
			return
		}
		clWriteJSON(w, 200, Order{OrderID: 7, Status: StatusFilled})
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	o, err := c.Cancel(context.Background(), 7)
	if ErrorCode(err) != CodeOrderNotOpen || o == nil || o.Status != StatusFilled {
		t.Fatalf("want order_not_open with the filled order, got %+v, %v", o, err)
	}
}

func Test_ValidateOrderRequest(t *testing.T) {
	ok := []struct {
		req            OrderRequest
		typ, tif, side string
	}{
		{OrderRequest{ClientID: "a", Symbol: "aapl", Side: "BUY", Quantity: 1}, "market", "ioc", "buy"},
		{OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "sell", Quantity: 1, LimitPrice: "1.5"}, "limit", "gtc", "sell"},
		{OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "sell", Quantity: 1, StopPrice: "100"}, "stop", "ioc", "sell"},
		{OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, StopPrice: "100", LimitPrice: "101"}, "stop_limit", "gtc", "buy"},
		{OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "10", TIF: "DAY", PostOnly: true}, "limit", "day", "buy"},
		{OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, TIF: "fok"}, "market", "fok", "buy"},
	}
	for _, c := range ok {
		req := c.req
		o, e := ValidateOrderRequest(&req)
		if e != nil {
			t.Fatalf("%+v: %v", c.req, e)
		}
		if req.Type != c.typ || req.TIF != c.tif || o.Side.String() != c.side || req.Symbol != "AAPL" {
			t.Fatalf("%+v: type %s tif %s side %s symbol %s", c.req, req.Type, req.TIF, o.Side, req.Symbol)
		}
	}
	base := func(f func(*OrderRequest)) OrderRequest {
		r := OrderRequest{ClientID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "10.00"}
		f(&r)
		return r
	}
	bad := []struct {
		req   OrderRequest
		field string
	}{
		{base(func(r *OrderRequest) { r.ClientID = "" }), "client_id"},
		{base(func(r *OrderRequest) { r.ClientID = "has space" }), "client_id"},
		{base(func(r *OrderRequest) { r.ClientID = strings.Repeat("x", 65) }), "client_id"},
		{base(func(r *OrderRequest) { r.Symbol = "" }), "symbol"},
		{base(func(r *OrderRequest) { r.Symbol = "TOO-LONG-SYMBOL" }), "symbol"},
		{base(func(r *OrderRequest) { r.Side = "short" }), "side"},
		{base(func(r *OrderRequest) { r.Quantity = 0 }), "quantity"},
		{base(func(r *OrderRequest) { r.Quantity = 1_000_001 }), "quantity"},
		{base(func(r *OrderRequest) { r.LimitPrice = "10.001" }), "limit_price"},
		{base(func(r *OrderRequest) { r.LimitPrice = "-1" }), "limit_price"},
		{base(func(r *OrderRequest) { r.LimitPrice = "1e3" }), "limit_price"},
		{base(func(r *OrderRequest) { r.LimitPrice = "0.00" }), "limit_price"},
		{base(func(r *OrderRequest) { r.StopPrice = "x" }), "stop_price"},
		{base(func(r *OrderRequest) { r.Type = "market" }), "limit_price"},
		{base(func(r *OrderRequest) { r.Type = "stop" }), "limit_price"},
		{base(func(r *OrderRequest) { r.Type = "stop_limit" }), "stop_price"},
		{base(func(r *OrderRequest) { r.Type = "limit"; r.LimitPrice = "" }), "limit_price"},
		{base(func(r *OrderRequest) { r.Type = "limit"; r.StopPrice = "5" }), "stop_price"},
		{base(func(r *OrderRequest) { r.Type = "twap" }), "type"},
		{base(func(r *OrderRequest) { r.TIF = "gtd" }), "tif"},
		{base(func(r *OrderRequest) { r.LimitPrice = ""; r.TIF = "gtc" }), "tif"},
		{base(func(r *OrderRequest) { r.PostOnly = true; r.TIF = "ioc" }), "post_only"},
		{base(func(r *OrderRequest) { r.PostOnly = true; r.LimitPrice = "" }), "post_only"},
	}
	for _, c := range bad {
		req := c.req
		_, e := ValidateOrderRequest(&req)
		if e == nil || e.Status != 400 || e.Code != CodeBadRequest || !strings.HasPrefix(e.Message, c.field+": ") {
			t.Fatalf("%+v: want a 400 naming %s, got %+v", c.req, c.field, e)
		}
	}
}

func Test_percent(t *testing.T) {
	for _, c := range []struct {
		num, den int64
		want     string
	}{
		{-10, 18910, "-0.05"}, {42, 18858, "0.22"}, {0, 100, "0.00"}, {-1, 1_000_000, "0.00"},
		{100, 100, "100.00"}, {5, 10_000, "0.05"}, {-5, 10_000, "-0.05"}, {1, 0, ""},
	} {
		if got := percent(c.num, c.den); got != c.want {
			t.Errorf("percent(%d, %d) = %q, want %q", c.num, c.den, got, c.want)
		}
	}
}
