package node

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hats-trading/hats/fsm"
)

// The reply of a forwarded batch keeps each command's fate: a result, a
// certain "not applied" (the follower may retry) or "unknown" (it must
// not), in order.
func TestForwardReplyRoundTrip(t *testing.T) {
	in := []outcome{
		{res: &fsm.Result{Index: 7, Code: fsm.CodeOK}},
		{err: fmt.Errorf("%w: %w: queue full", errNotApplied, ErrNoLeader)},
		{err: ErrClosed},
		{err: fmt.Errorf("%w: deadline passed while committing", ErrOutcomeUnknown)},
		{res: &fsm.Result{Index: 8, Code: fsm.CodeInsufficientFunds, Message: "needs 1.00"}},
	}
	out, err := decodeForwardReply(encodeForwardReply(in), len(in))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].err != nil || out[0].res.Index != 7 {
		t.Errorf("0: %+v", out[0])
	}
	for _, i := range []int{1, 2} {
		if !errors.Is(out[i].err, errNotApplied) || errors.Is(out[i].err, ErrOutcomeUnknown) {
			t.Errorf("%d: %v, want not applied", i, out[i].err)
		}
	}
	if !errors.Is(out[3].err, ErrOutcomeUnknown) || errors.Is(out[3].err, errNotApplied) {
		t.Errorf("3: %v, want unknown", out[3].err)
	}
	if out[4].res == nil || out[4].res.Code != fsm.CodeInsufficientFunds || out[4].res.Message != "needs 1.00" {
		t.Errorf("4: %+v", out[4])
	}
}

func TestForwardReplyMalformed(t *testing.T) {
	good := encodeForwardReply([]outcome{{res: &fsm.Result{Index: 1}}, {err: ErrClosed}})
	cases := map[string]struct {
		b    []byte
		want int
	}{
		"empty":         {nil, 2},
		"wrong count":   {good, 3},
		"truncated":     {good[:len(good)-1], 2},
		"trailing":      {append(append([]byte{}, good...), 0), 2},
		"unknown kind":  {[]byte{1, 9, 0}, 1},
		"bad result":    {[]byte{1, fwdOK, 1, 0xff}, 1},
		"length beyond": {[]byte{1, fwdUnknown, 50, 'x'}, 1},
	}
	for name, c := range cases {
		if _, err := decodeForwardReply(c.b, c.want); !errors.Is(err, errBadForwardReply) {
			t.Errorf("%s: err %v, want errBadForwardReply", name, err)
		}
	}
}
