package fsm

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// BenchmarkApplyOrders measures the state machine applying batches of 256
// order commands through ApplyBatch with bbolt: decode, risk checks and
// reservations, matching, settlement (cash, positions, tape, statements,
// day stats) and the order records, all in one bbolt transaction per batch.
// One b.N iteration is one batch. The mix follows BenchmarkMatch in the
// market package: 55% passive limit orders, 15% aggressive limits, 5%
// market orders, 25% cancels (by the owner) of orders that rested, and
// cancels instead of new orders while the book holds more than 5,000
// orders. 64 funded traders, one symbol.
//
// Place commands carry client order IDs that grow with time, as the Go
// client's do. Besides wall time per command, "cpu-ns/cmd" is the
// process's CPU time per command while applying, including the background
// checkpoint writer (the run ends with a Flush) but not generating the
// commands, which runs on its own locked thread and is subtracted.
//
// "fsync" is the real configuration (one fsync per batch commit);
// "nosync" sets bbolt's NoSync to show the CPU cost alone; "packed" hands
// each batch over as one TypeBatch entry, as the leader's group commit
// does under load, instead of one entry per command; "lone" applies each
// entry with an ApplyBatch call of its own, as Raft hands them over when
// orders arrive one at a time (one client, or a moderate rate): what an
// entry costs beyond its orders.
func BenchmarkApplyOrders(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchApplyOrders(b, entriesTogether) })
	b.Run("nosync", func(b *testing.B) { benchApplyOrders(b, entriesTogether|noSync) })
	b.Run("packed", func(b *testing.B) { benchApplyOrders(b, packedEntry) })
	b.Run("lone", func(b *testing.B) { benchApplyOrders(b, entriesAlone) })
}

// benchMode says how benchApplyOrders hands its commands over.
type benchMode int

// entriesTogether (no flag) is an entry per command and one ApplyBatch
// call per batch.
const entriesTogether benchMode = 0

const (
	packedEntry  benchMode = 1 << iota // the batch as one TypeBatch entry
	entriesAlone                       // an ApplyBatch call per entry
	noSync                             // bbolt's NoSync
)

func benchApplyOrders(b *testing.B, mode benchMode) {
	const (
		batch   = 256
		accts   = 64
		mid     = int64(10_000)
		maxBook = 5_000
		sym     = "AAA"
	)
	h := &harness{t: b, f: mustOpen(b), next: 1, term: 1, now: t0}
	for _, s := range exSymbols { // sym is the first; the second stays idle
		wantCode(b, h.apply1(setInstrument(s.sym, s.ref)), CodeOK)
	}
	ledger := newLedger()
	var setup []*Command
	for i := range accts {
		id := h.register("trader" + string(rune('a'+i/26)) + string(rune('a'+i%26)))
		setup = append(setup, deposit(id, trader.MaxAmount), sharesCmd(TypeDepositShares, id, sym, 100_000_000))
	}
	for i, r := range h.apply(setup...) {
		wantCode(b, r, CodeOK)
		ledger.note(setup[i], r)
	}
	h.f.db.NoSync = mode&noSync != 0

	rng := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 {
		rng ^= rng >> 12
		rng ^= rng << 25
		rng ^= rng >> 27
		return rng * 2685821657736338717
	}
	var nextOrder uint64 // order IDs are assigned 1, 2, ... per place command
	owner := map[uint64]uint64{}
	var open []uint64
	book := h.f.books[sym]
	cmds := make([]*Command, batch)
	genBatch := func() []*raft.Log {
		full := len(book.RestingOrders()) > maxBook
		for i := range cmds {
			r := next()
			kind := r % 100
			if (kind >= 75 || full) && len(open) > 0 {
				j := int((r >> 8) % uint64(len(open)))
				id := open[j]
				open[j] = open[len(open)-1]
				open = open[:len(open)-1]
				cmds[i] = &Command{Type: TypeCancelOrder, Account: owner[id], OrderID: id}
				continue
			}
			acct := 1 + (r>>8)%accts
			side := market.Side(1 + (r>>24)%2)
			ticks := int64((r >> 32) % 20)
			sign := int64(1)
			if side == market.Buy {
				sign = -1
			}
			qty := int64(1 + (r>>16)%100)
			var c *Command
			switch {
			case kind < 55:
				c = limitCmd(acct, sym, side, qty, mid+sign*(1+ticks))
			case kind < 70:
				c = limitCmd(acct, sym, side, qty, mid-sign*(ticks%4))
			default:
				c = placeCmd(acct, sym, side, market.Market, market.IOC, qty, 0, 0)
			}
			nextOrder++
			c.ClientID = fmt.Sprintf("c-%012x%012x", nextOrder, next()>>16)
			owner[nextOrder] = acct
			if kind < 70 {
				open = append(open, nextOrder)
			}
			c.Time = h.now
			h.now += int64(time.Millisecond)
			cmds[i] = c
		}
		return h.logs(cmds...)
	}

	// Warm up to a steady-state book.
	for range 40 {
		exApply(b, h.f, genBatch())
	}
	if err := h.f.Flush(); err != nil { // the warm-up's keys are not counted
		b.Fatal(err)
	}
	keys0 := h.f.checkpointKeys.Load()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	trades0 := book.TradeSeq
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, gen := cpuTime(cpuProcess), time.Duration(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g0 := cpuTime(cpuThread)
		logs := genBatch()
		if mode&packedEntry != 0 {
			parts := make([][]byte, len(logs))
			for j, l := range logs {
				parts[j] = l.Data
			}
			logs = []*raft.Log{{Index: logs[len(logs)-1].Index, Term: 1, Type: raft.LogCommand, Data: EncodeBatch(parts)}}
		}
		gen += cpuTime(cpuThread) - g0
		b.StartTimer()
		if mode&entriesAlone != 0 {
			for _, l := range logs {
				h.f.ApplyBatch([]*raft.Log{l})
			}
			continue
		}
		h.f.ApplyBatch(logs)
	}
	if err := h.f.Flush(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cpuTime(cpuProcess) - cpu0 - gen
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * batch)
	if cpu > 0 { // measured where the platform can (cputime_*_test.go)
		b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/cmd")
	}
	b.ReportMetric(n/b.Elapsed().Seconds(), "cmds/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/cmd")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/cmd")
	b.ReportMetric(float64(book.TradeSeq-trades0)/n, "trades/cmd")
	b.ReportMetric(float64(h.f.checkpointKeys.Load()-keys0)/n, "ckpt-keys/cmd")
	if msg := exchangeViolation(h.f, ledger); msg != "" {
		b.Fatal(msg)
	}
}
