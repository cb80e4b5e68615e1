// Package fsm is the replicated state machine of HATS: one bbolt file that
// holds the market and trader databases as buckets, changed only by
// commands committed through Raft. See DESIGN.md for why it is built so.
package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/hats-trading/hats/market"
)

// Errors of the fsm package beyond business rejections.
var (
	ErrClosed  = errors.New("state machine closed")
	ErrRestore = errors.New("snapshot restore failed")
)

// Bucket layout. Top-level buckets group the two databases of the original
// design (trader and market) plus cluster metadata.
var (
	bMeta        = []byte("meta")
	bCluster     = []byte("cluster")
	bNodes       = []byte("nodes")
	bTrader      = []byte("trader")
	bAccounts    = []byte("accounts")
	bUsers       = []byte("users")
	bCredentials = []byte("credentials")
	bSessions    = []byte("sessions")
	bIdem        = []byte("idempotency")
	bIdemByTime  = []byte("idempotency_by_time")
	bMarket      = []byte("market")

	kAppliedIndex = []byte("applied_index")
	kAppliedTerm  = []byte("applied_term")
	kClusterKey   = []byte("cluster_key")
	kNextAccount  = []byte("next_account_id")
)

// IdempotencyTTL is how long a stored result answers retries of its key.
const IdempotencyTTL = 24 * time.Hour

// FSM implements raft.BatchingFSM over a bbolt file.
type FSM struct {
	path     string
	log      *slog.Logger
	maxRules uint64 // highest rules version applied (rules.go)

	mu     sync.RWMutex // held for reading by every transaction, for writing by Restore
	db     *bolt.DB
	oldDBs sync.WaitGroup // state files a restore replaced, closing in the background

	// books are the in-memory order books, derived from the bbolt state
	// (rebuilt on open and restore) and changed only inside ApplyBatch.
	bookMu   sync.Mutex
	books    map[string]*market.Book
	seqs     map[seqKey]seqState   // last per-account sequences (exchange.go); under bookMu
	cids     map[uint64]*cidWindow // per account, its newest client-ID keys (exchange.go); under bookMu
	hot      *hot                  // accounts, positions, book stats (hot.go); under bookMu
	x        *exch                 // the command working set newExch reuses; under bookMu
	idemHead []byte                // where idempotency pruning resumes (apply.go); under bookMu
	// houseAcct is the house account (0: none yet) when houseKnown, so
	// order events need not read it from the state per command
	// (events.go); house() sets it when it creates the account, which
	// never changes after. Under bookMu.
	houseAcct  uint64
	houseKnown bool

	walkMu      sync.Mutex // serializes RecentHash walks
	hashMu      sync.Mutex // cache of the last Hash walk
	hashIndex   uint64
	hashValue   string
	hashGen     uint64
	hashAt      time.Time
	hashWalking bool          // a background walk for StatusHash is running
	hashTook    time.Duration // how long the last walk took
	restores    atomic.Uint64 // bumped by Restore: same index, new state is possible
	members     atomic.Uint64 // bumped by every applied member change (MembersGen)
	// symbols is the set of listed instruments, republished (never
	// changed in place) whenever books gain a symbol, so the API can check
	// an order's symbol without a read transaction (HasSymbol).
	symbols atomic.Pointer[map[string]struct{}]

	applied  atomic.Uint64
	commands atomic.Uint64 // commands applied since Open (not skipped replays)

	// Applying into memory (store.go, DESIGN.md). Applied entries change
	// the active layer; once it is older than opts.CommitInterval or holds
	// opts.CommitMaxCommands commands it is frozen and queued, and the
	// checkpoint writer (flushLoop) commits frozen layers to the file in
	// order, each with the applied index it ends at, then drops them.
	// Reads see active, then frozen newest first, then the file. Until a
	// layer is committed its entries are durable only in the Raft log,
	// which replays them after a crash because the applied index stored
	// in the file is the committed one.
	opts    Options
	txMu    sync.Mutex // guards active, frozen and applyTx; held by ApplyBatch and View
	flushed *sync.Cond // on txMu: a frozen layer was committed or dropped
	active  *layer
	frozen  []*layer // oldest first
	// applyTx is the state transaction ApplyBatch writes through, kept
	// from one call to the next while the layers it reads through stay
	// the same (applyTxLocked): a lone entry then skips opening a bbolt
	// read transaction and every bucket it touches. Its read transaction
	// is released at every freeze, so it lives at most about a commit
	// interval, and before anything waits for the checkpoint writer or
	// closes the file.
	applyTx *stx
	// mapped is the address space the state file was opened with
	// (initialMmap, or fallbackMmap where that failed).
	mapped int
	// frozenN counts the layers frozen so far; a layer's number is the
	// count after it, and those up to frozenN-len(frozen) are done
	// (checkpointed or discarded: they leave frozen in order).
	frozenN uint64
	// frozenLen is len(frozen), readable without txMu (CheckpointStats:
	// a status poll must not wait out an apply batch).
	frozenLen atomic.Int32
	sizes     map[string]treeSize // key counts of the last frozen layer (newLayer)
	closed    bool                // Close ran; under txMu
	flushes   atomic.Int32        // Flush calls waiting for the writer

	checkpointed atomic.Uint64 // applied index the state file holds
	applyWaits   atomic.Uint64 // ApplyBatch calls that waited for room, since Open
	// checkpointKeys counts the keys checkpoints wrote or deleted in the
	// file since Open (each a B+tree search and insert): benchmarks report
	// it per command.
	checkpointKeys atomic.Uint64

	beforeCheckpoint func() // tests: runs before each layer is written
	commits          atomic.Uint64
	kick             chan struct{}
	stopFlush        chan struct{}
	flushDone        chan struct{}

	waitMu sync.Mutex
	waitCh chan struct{} // closed and replaced whenever applied advances
}

var _ raft.BatchingFSM = (*FSM)(nil)

// initialMmap is the address space mapped for the state file up front: 16
// GiB on 64-bit systems (address space only; pages are read in as used).
// Growing past the mapping makes a checkpoint remap the file, which waits
// for every open read transaction, including a snapshot being streamed;
// meanwhile new reads (and so applying) wait behind it. A mapping larger
// than any state a node will hold keeps that from ever happening. Where
// the address space is limited (ulimit -v) and the mapping fails, open
// falls back to fallbackMmap and says so. A variable for tests.
var initialMmap = 1 << (30 + 4*(strconv.IntSize/64))

const fallbackMmap = 1 << 30

func boltOptions(mmapSize int) *bolt.Options {
	// See initialMmap for the mapping's size. The freelist is not
	// written on every commit (bbolt rebuilds it on open by scanning), which
	// trims each commit's writes; data and meta pages are still fsynced.
	// Nothing reads bbolt's database-wide statistics, so they are not
	// kept (in bbolt v1.5.0 this saves a lock per transaction; the
	// per-transaction counters are kept regardless).
	return &bolt.Options{Timeout: 2 * time.Second, InitialMmapSize: mmapSize, FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
		NoStatistics: true}
}

// Options tune how the state file is written.
type Options struct {
	// CommitInterval is how long applied commands may stay in the active
	// memory layer before it is frozen and checkpointed (committed and
	// fsynced to the file in the background). Zero makes every ApplyBatch
	// wait for its checkpoint.
	CommitInterval time.Duration
	// CommitMaxCommands freezes the active layer earlier once it holds
	// this many commands; 0 means DefaultCommitMaxCommands.
	CommitMaxCommands int
	// MaxRules is the highest state-machine rules version the node
	// applies (rules.go); 0 means SupportedRules. Lower only to stand in
	// for an older release, as mixed-version tests do.
	MaxRules uint64
}

// Defaults of Options.
const (
	DefaultCommitInterval    = 500 * time.Millisecond
	DefaultCommitMaxCommands = 20_000
)

// DefaultOptions is what Open uses.
func DefaultOptions() Options {
	return Options{CommitInterval: DefaultCommitInterval, CommitMaxCommands: DefaultCommitMaxCommands}
}

// Open opens (or creates) the state file at path with DefaultOptions.
func Open(path string, log *slog.Logger) (*FSM, error) {
	return OpenWith(path, log, DefaultOptions())
}

// OpenWith opens (or creates) the state file at path.
func OpenWith(path string, log *slog.Logger, opts Options) (*FSM, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.CommitInterval < 0 {
		opts.CommitInterval = 0
	}
	if opts.CommitMaxCommands <= 0 {
		opts.CommitMaxCommands = DefaultCommitMaxCommands
	}
	if opts.MaxRules == 0 || opts.MaxRules > SupportedRules {
		opts.MaxRules = SupportedRules
	}
	f := &FSM{path: path, log: log, waitCh: make(chan struct{}), opts: opts, maxRules: opts.MaxRules,
		kick: make(chan struct{}, 1), stopFlush: make(chan struct{}), flushDone: make(chan struct{})}
	f.flushed = sync.NewCond(&f.txMu)
	if err := f.open(); err != nil {
		return nil, err
	}
	go f.flushLoop()
	return f, nil
}

// maxFrozen bounds the layers waiting for the checkpoint writer; past it
// applying waits, so memory stays bounded if the disk falls behind.
const maxFrozen = 4

// flushLoop is the checkpoint writer: it commits frozen layers to the
// state file in order, and freezes the active layer once it is old
// enough, so a quiet cluster's last commands reach the file within about
// CommitInterval instead of waiting for the next write.
func (f *FSM) flushLoop() {
	defer close(f.flushDone)
	var tick <-chan time.Time
	if f.opts.CommitInterval > 0 {
		t := time.NewTicker(f.opts.CommitInterval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-f.stopFlush:
			return
		case <-f.kick:
		case <-tick:
			f.txMu.Lock()
			if f.active != nil && time.Since(f.active.since) >= f.opts.CommitInterval {
				f.freezeLocked()
			}
			f.txMu.Unlock()
		}
		for f.checkpointOne() {
		}
	}
}

// freezeLocked queues the active layer for the checkpoint writer. Callers
// hold txMu, at an entry boundary.
func (f *FSM) freezeLocked() {
	f.dropApplyTxLocked()
	if f.active == nil {
		return
	}
	f.frozen = append(f.frozen, f.active)
	f.frozenLen.Store(int32(len(f.frozen)))
	f.sizes = f.active.keyCounts()
	f.active = nil
	f.frozenN++
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// checkpointOne commits the oldest frozen layer (with the applied index it
// ends at) to the state file, hands the snapshots waiting on it a read
// transaction of exactly that state, and drops it. It reports whether
// there was one. A failed commit stops the node: applied state the file
// cannot hold must not be acknowledged again (the Raft log replays it).
func (f *FSM) checkpointOne() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.txMu.Lock()
	if f.db == nil || len(f.frozen) == 0 {
		f.txMu.Unlock()
		return false
	}
	l := f.frozen[0]
	f.txMu.Unlock()
	if f.beforeCheckpoint != nil {
		f.beforeCheckpoint()
	}
	if len(l.buckets) > 0 {
		tx, err := f.db.Begin(true)
		if err != nil {
			panic(fmt.Sprintf("fsm: begin checkpoint: %v", err))
		}
		packBuckets(tx)
		if err := l.writeTo(tx); err != nil {
			_ = tx.Rollback()
			panic(fmt.Sprintf("fsm: checkpoint of applied state failed: %v", err))
		}
		if err := tx.Commit(); err != nil {
			panic(fmt.Sprintf("fsm: commit of applied state failed: %v", err))
		}
		f.commits.Add(1)
		for _, t := range l.buckets {
			f.checkpointKeys.Add(uint64(len(t.ents)))
		}
		if l.index > 0 {
			f.checkpointed.Store(l.index)
		}
	}
	f.txMu.Lock()
	for _, s := range l.snaps {
		// Before any newer layer commits: the read transaction is the
		// state as of l.index, the snapshot's index.
		s.tx, s.err = f.db.Begin(false)
		close(s.ready)
	}
	l.snaps = nil
	f.frozen[0] = nil
	f.frozen = f.frozen[1:]
	f.frozenLen.Store(int32(len(f.frozen)))
	f.flushed.Broadcast()
	f.txMu.Unlock()
	return true
}

// discardLocked drops every layer not yet in the file (Restore replaces
// the state; Close after a final Flush); snapshots waiting on them fail.
// Callers hold txMu.
func (f *FSM) discardLocked(err error) {
	f.dropApplyTxLocked()
	for _, l := range f.frozen {
		for _, s := range l.snaps {
			s.err = err
			close(s.ready)
		}
	}
	f.frozen, f.active = nil, nil
	f.flushed.Broadcast()
}

// applyTxLocked returns the transaction ApplyBatch writes through: the
// one the last call used while the layers are still the ones it reads
// through (the file changes only under a checkpoint, which then drops its
// layer, so the same layers mean the same state), else a new one, with
// the active layer created if there is none. Callers hold txMu.
func (f *FSM) applyTxLocked() *stx {
	if f.active == nil {
		f.active = newLayer(f.sizes)
	}
	if t := f.applyTx; t != nil && f.sameLayersLocked(t.layers) {
		return t
	}
	f.dropApplyTxLocked()
	base, err := f.db.Begin(false)
	if err != nil {
		panic(fmt.Sprintf("fsm: begin state transaction: %v", err))
	}
	f.applyTx = newStx(base, f.layersLocked(), true)
	return f.applyTx
}

// sameLayersLocked reports whether ls is what layersLocked would return.
func (f *FSM) sameLayersLocked(ls []*layer) bool {
	if f.active == nil || len(ls) != len(f.frozen)+1 || ls[0] != f.active {
		return false
	}
	for i, l := range ls[1:] {
		if l != f.frozen[len(f.frozen)-1-i] {
			return false
		}
	}
	return true
}

// dropApplyTxLocked releases the transaction applyTxLocked keeps (its
// bbolt read transaction holds pages the writer frees, and bbolt's Close
// waits for it). Callers hold txMu.
func (f *FSM) dropApplyTxLocked() {
	if f.applyTx != nil {
		_ = f.applyTx.base.Rollback()
		f.applyTx = nil
	}
}

// layersLocked lists the layers a transaction reads through, newest
// first. Callers hold txMu.
func (f *FSM) layersLocked() []*layer {
	out := make([]*layer, 0, len(f.frozen)+1)
	if f.active != nil {
		out = append(out, f.active)
	}
	for i := len(f.frozen) - 1; i >= 0; i-- {
		out = append(out, f.frozen[i])
	}
	return out
}

// abandonLocked is the panic path of ApplyBatch (rule 7: the node stops).
// The active layer may hold part of the failing batch, so it is dropped,
// and the applied index and books go back to what the frozen layers and
// the file hold; whatever else was applied is replayed from the Raft log
// when the node starts again. Callers hold f.mu, txMu and bookMu, and
// pass the batch's read transaction (opening a second one could wait
// forever behind a checkpoint that waits for the first to end).
func (f *FSM) abandonLocked(base *bolt.Tx) {
	defer f.dropApplyTxLocked()
	f.resetCaches()
	f.active = nil
	f.members.Add(1) // the dropped layer may have held a member change
	st := newStx(base, f.layersLocked(), false)
	idx := getU64(st.Bucket(bMeta), kAppliedIndex)
	books, err := loadBooks(st)
	if err != nil {
		f.log.Error("reloading state after a failed apply", "err", err)
		return
	}
	f.setBooks(books)
	f.applied.Store(idx)
}

// setBooks installs books rebuilt from the state and publishes their
// symbols. Callers hold bookMu.
func (f *FSM) setBooks(books map[string]*market.Book) {
	f.books = books
	f.publishSymbols()
}

// publishSymbols republishes the symbol set from books (bookMu held).
func (f *FSM) publishSymbols() {
	set := make(map[string]struct{}, len(f.books))
	for sym := range f.books {
		set[sym] = struct{}{}
	}
	f.symbols.Store(&set)
}

// HasSymbol reports whether sym is listed in the state applied so far. It
// takes no lock: the set is never changed in place, only replaced whole
// when a symbol is listed or the books are rebuilt (open, restore, a
// failed apply).
func (f *FSM) HasSymbol(sym string) bool {
	set := f.symbols.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[sym]
	return ok
}

// resetCaches drops the caches of what the state holds (per-account
// sequences and largest client IDs, hot records, the house account,
// where pruning resumes): on open, restore and rollback. Callers hold
// bookMu.
func (f *FSM) resetCaches() {
	f.seqs = map[seqKey]seqState{}
	f.cids = map[uint64]*cidWindow{}
	f.hot = newHot()
	f.idemHead = nil
	f.houseAcct, f.houseKnown = 0, false
	f.x = nil // it holds the last command's transaction
}

// appendFill is the fill factor of the buckets Apply writes. Their keys
// mostly grow at the end of a range (order IDs, per-account order-index
// and log-chunk keys), so a page split at bbolt's
// default of one half leaves the older page half empty forever: the
// file, every commit's page writes and every snapshot would be about
// twice as large as they need to be.
const appendFill = 0.9

// packBuckets sets appendFill on every nested bucket for the life of tx
// (bbolt keeps the setting on the transaction's bucket handles).
func packBuckets(tx *bolt.Tx) {
	_ = tx.ForEach(func(_ []byte, top *bolt.Bucket) error {
		top.FillPercent = appendFill
		return top.ForEachBucket(func(k []byte) error {
			top.Bucket(k).FillPercent = appendFill
			return nil
		})
	})
}

// Flush commits every command applied so far to the state file and
// returns once it is there. It waits for the layers that hold them, not
// for an empty queue, which under sustained load may never come.
func (f *FSM) Flush() error {
	f.txMu.Lock()
	defer f.txMu.Unlock()
	if f.closed {
		return ErrClosed
	}
	f.freezeLocked()
	f.flushes.Add(1)
	defer f.flushes.Add(-1)
	for want := f.frozenN; f.frozenN-uint64(len(f.frozen)) < want && !f.closed; {
		f.flushed.Wait()
	}
	return nil
}

// waitRoom holds applying back while maxFrozen layers wait for the
// checkpoint writer.
func (f *FSM) waitRoom() {
	f.txMu.Lock()
	if len(f.frozen) >= maxFrozen && !f.closed {
		f.applyWaits.Add(1)
		for len(f.frozen) >= maxFrozen && !f.closed {
			f.flushed.Wait()
		}
	}
	f.txMu.Unlock()
}

// Commits counts checkpoint commits of applied state since Open.
func (f *FSM) Commits() uint64 { return f.commits.Load() }

// CheckpointStats says how far the state file lags what is applied: the
// applied index the file holds, the layers queued for the checkpoint
// writer, and how many times applying waited because too many were
// queued (since Open). Operators watch it through /v1/status.
func (f *FSM) CheckpointStats() (index uint64, queued int, waits uint64) {
	return f.checkpointed.Load(), int(f.frozenLen.Load()), f.applyWaits.Load()
}

func (f *FSM) open() error {
	f.mapped = initialMmap
	db, err := bolt.Open(f.path, 0o600, boltOptions(initialMmap))
	if errors.Is(err, syscall.ENOMEM) && initialMmap > fallbackMmap {
		f.log.Warn("could not map the state file's address space up front (ulimit -v?); mapping 1 GiB instead: once the file outgrows it, a checkpoint waits for open reads, including a snapshot being sent",
			"path", f.path, "wanted_bytes", initialMmap, "err", err)
		f.mapped = fallbackMmap
		db, err = bolt.Open(f.path, 0o600, boltOptions(fallbackMmap))
	}
	if err != nil {
		return fmt.Errorf("open state %s: %w", f.path, err)
	}
	// A newer release's state is left as it is, unconverted.
	err = db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bMeta); meta != nil {
			return f.checkRules(rulesOf(meta))
		}
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("open state %s: %w", f.path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		moved, err := migrateLogs(tx)
		if moved > 0 {
			f.log.Info("converted the state file's statements, order events and trades to chunked logs", "path", f.path, "records", moved)
		}
		if err != nil {
			return err
		}
		moved, err = migrateOrderIndex(tx)
		if moved > 0 {
			f.log.Info("converted the state file's per-trader order index to chunks", "path", f.path, "orders", moved)
		}
		if err != nil {
			return err
		}
		if err := ensureBuckets(tx); err != nil {
			return err
		}
		moved, err = migrateOpenSet(tx)
		if moved > 0 {
			f.log.Info("moved the state file's open orders' records into the open set", "path", f.path, "orders", moved)
		}
		return err
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("init state %s: %w", f.path, err)
	}
	var idx uint64
	var books map[string]*market.Book
	err = db.View(func(tx *bolt.Tx) error {
		st := newStx(tx, nil, false)
		idx = getU64(st.Bucket(bMeta), kAppliedIndex)
		var err error
		books, err = loadBooks(st)
		return err
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("load books from %s: %w", f.path, err)
	}
	f.bookMu.Lock()
	f.setBooks(books)
	f.resetCaches()
	f.bookMu.Unlock()
	f.db = db
	f.applied.Store(idx)
	f.checkpointed.Store(idx)
	return nil
}

// migrateOpenSet converts a state whose open set holds symbols (every
// order's record in the orders table) into one whose open set holds the
// active orders' records and the orders table only finished ones, in
// the caller's transaction, and marks the state converted (a new state
// is marked at once). It reports how many records it moved. The result
// is exactly what applying the same log with the new layout would have
// written, so every replica converts to the same state.
func migrateOpenSet(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bMeta)
	if meta.Get(kOpenRecords) != nil {
		return 0, nil
	}
	mb := tx.Bucket(bMarket)
	orders, open := mb.Bucket(bOrders), mb.Bucket(bOpen)
	var ids [][]byte
	err := open.ForEach(func(k, _ []byte) error {
		ids = append(ids, bytes.Clone(k))
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range ids {
		v := orders.Get(k)
		if v == nil {
			return 0, fmt.Errorf("%w: open order %x has no record", ErrCorrupt, k)
		}
		if err := open.Put(k, bytes.Clone(v)); err != nil {
			return 0, err
		}
		if err := orders.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(ids), meta.Put(kOpenRecords, []byte{1})
}

func ensureBuckets(tx *bolt.Tx) error {
	layout := []struct {
		top  []byte
		subs [][]byte
	}{
		{bMeta, nil},
		{bCluster, [][]byte{bNodes, bAssignments}},
		{bTrader, [][]byte{bAccounts, bUsers, bCredentials, bSessions, bIdem, bIdemByTime, bClientIDs, bOrderIndex, bPositions, bLedger, bOrderEvents}},
		{bMarket, [][]byte{bInstruments, bOrders, bOpen, bBooks, bTrades, bQuotes}},
	}
	for _, l := range layout {
		b, err := tx.CreateBucketIfNotExists(l.top)
		if err != nil {
			return err
		}
		for _, s := range l.subs {
			if _, err := b.CreateBucketIfNotExists(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close commits what is applied and closes the state file.
func (f *FSM) Close() error {
	ferr := f.Flush()
	select {
	case <-f.stopFlush:
	default:
		close(f.stopFlush)
	}
	<-f.flushDone
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txMu.Lock()
	f.closed = true
	f.discardLocked(ErrClosed)
	f.txMu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	if err == nil && !errors.Is(ferr, ErrClosed) {
		err = ferr
	}
	f.waitOldDBs()
	return err
}

// waitOldDBs waits, for a bounded time, for state files that restores
// replaced to close (each waits for the snapshots still reading it).
func (f *FSM) waitOldDBs() {
	done := make(chan struct{})
	go func() {
		f.oldDBs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.log.Warn("a replaced state file is still open: a snapshot of it was not released")
	}
}

// MembersGen changes whenever the member table (View.Node) may have
// changed: a member command was applied, the state was restored or
// reloaded. Callers that cache member addresses read it before their View
// and keep the cache only while it stays the same.
func (f *FSM) MembersGen() uint64 { return f.members.Load() + f.restores.Load() }

// AppliedIndex is the last log index whose effects reads see.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// CommandsApplied counts commands applied since Open; replays skipped on
// restart are not counted. Tests use it to prove nothing is applied twice.
func (f *FSM) CommandsApplied() uint64 { return f.commands.Load() }

// WaitApplied blocks until the applied index reaches idx or done is closed.
func (f *FSM) WaitApplied(done <-chan struct{}, idx uint64) bool {
	for {
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if f.applied.Load() >= idx {
			return true
		}
		select {
		case <-ch:
		case <-done:
			return f.applied.Load() >= idx
		}
	}
}

func (f *FSM) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// Apply implements raft.FSM for a single entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of committed entries into the active layer,
// which also records the last applied index and term (rule 3); the
// checkpoint writer commits it to the file later (see Options). Entries at
// or below the stored index were applied before a restart and are
// skipped.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	f.waitRoom()
	resps, syncCommit := f.applyBatch(logs)
	if syncCommit {
		_ = f.Flush()
	}
	return resps
}

func (f *FSM) applyBatch(logs []*raft.Log) (resps []interface{}, syncCommit bool) {
	resps = make([]interface{}, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		panic(ErrClosed)
	}
	f.txMu.Lock()
	defer f.txMu.Unlock()
	f.bookMu.Lock()
	defer f.bookMu.Unlock()
	tx := f.applyTxLocked()
	defer func() {
		if r := recover(); r != nil {
			base := tx.base
			if f.applyTx != tx { // a freeze in this batch released it
				var err error
				if base, err = f.db.Begin(false); err != nil {
					panic(r)
				}
				defer base.Rollback()
			}
			f.abandonLocked(base)
			panic(r)
		}
	}()
	meta := tx.Bucket(bMeta)
	applied := getU64(meta, kAppliedIndex)
	last := applied
	var lastTerm, n uint64
	for i, l := range logs {
		if l.Index <= applied {
			continue // already applied before a restart
		}
		last, lastTerm = l.Index, l.Term
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) > 0 && Type(l.Data[0]) == TypeBatch {
			cmds, err := DecodeBatch(l.Data)
			if err != nil {
				panic(fmt.Sprintf("fsm: undecodable committed batch at index %d: %v", l.Index, err))
			}
			br := &BatchResult{Results: make([]*Result, len(cmds))}
			for j, cmd := range cmds {
				br.Results[j] = f.applyCommand(tx, cmd, l.Index)
			}
			f.hot.flush(tx) // per entry: the same point on every replica
			resps[i] = br
			n += uint64(len(cmds))
			continue
		}
		cmd, err := Decode(l.Data)
		if err != nil {
			// Rule 7: a committed entry that cannot be decoded must stop
			// the node rather than let replicas diverge.
			panic(fmt.Sprintf("fsm: undecodable committed entry at index %d: %v", l.Index, err))
		}
		resps[i] = f.applyCommand(tx, cmd, l.Index)
		f.hot.flush(tx)
		n++
	}
	if last > applied {
		putU64(meta, kAppliedIndex, last)
		putU64(meta, kAppliedTerm, lastTerm)
		f.active.index = last
	}
	f.active.cmds += int(n)
	if f.opts.CommitInterval == 0 || f.active.cmds >= f.opts.CommitMaxCommands || time.Since(f.active.since) >= f.opts.CommitInterval {
		f.freezeLocked()
		syncCommit = f.opts.CommitInterval == 0
	}
	f.commands.Add(n)
	if last > f.applied.Load() {
		f.setApplied(last)
	}
	if f.applyTx == tx && tx.base.Size() > int64(f.mapped/2) {
		// A checkpoint that grows the file past its mapping remaps it,
		// which waits for every read transaction; while it waits, a
		// View opening one would wait holding txMu, and dropping this
		// one needs txMu. Near the mapping's end, keep none between
		// calls.
		f.dropApplyTxLocked()
	}
	return resps, syncCommit
}

// Snapshot captures the applied state without waiting for it to reach the
// file: the active layer is frozen, and Persist gets a read transaction the
// checkpoint writer opens right after committing that layer (before any
// newer one), so the snapshot is exactly the state at its index and the
// stored applied index is never behind a snapshot (the Raft log never
// drops an entry the state file still needs).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, _, err := f.SnapshotAt()
	return snap, err
}

// SnapshotAt is Snapshot from any goroutine (a backup), with the applied
// index the snapshot's state is at: taken while the apply loop is held
// off, so no entry can land between the two.
func (f *FSM) SnapshotAt() (raft.FSMSnapshot, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, 0, ErrClosed
	}
	s := &snapshot{ready: make(chan struct{})}
	f.txMu.Lock()
	index := f.applied.Load()
	f.freezeLocked()
	if n := len(f.frozen); n > 0 {
		f.frozen[n-1].snaps = append(f.frozen[n-1].snaps, s)
		f.txMu.Unlock()
		return s, index, nil
	}
	f.txMu.Unlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot: %w", err)
	}
	s.tx = tx
	close(s.ready)
	return s, index, nil
}

type snapshot struct {
	ready chan struct{} // closed once tx or err is set
	tx    *bolt.Tx
	err   error
	once  sync.Once
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	<-s.ready
	if s.err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", s.err)
	}
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {
	s.once.Do(func() {
		<-s.ready
		if s.tx != nil {
			_ = s.tx.Rollback()
		}
	})
}

// Restore replaces the whole state with the snapshot's bbolt file (rule 4).
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRestore, err)
	}
	size, err := io.Copy(&StepSync{W: out, Sync: out.Sync, Step: SnapshotSyncStep}, rc)
	if err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("%w: copy: %v", ErrRestore, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("%w: sync: %v", ErrRestore, err)
	}
	out.Close()
	// Validate before replacing anything.
	rules := RulesBase
	if err := validateStateFile(tmp, size, false, func(tx *bolt.Tx) { rules = rulesOf(tx.Bucket(bMeta)) }); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %v", ErrRestore, err)
	}
	if err := f.checkRules(rules); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: snapshot: %w", ErrRestore, err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.txMu.Lock()
	f.discardLocked(ErrRestore) // replaced wholesale by the snapshot
	f.txMu.Unlock()
	if f.db != nil {
		// A snapshot taken before this restore may still hold a read
		// transaction of the current file, and bbolt's Close waits for
		// every read transaction. Raft can be waiting for this Restore
		// before it lets that snapshot finish (hashicorp/raft's
		// takeSnapshot holds the FSM snapshot while it asks the main loop
		// for the configuration, and the main loop is installing the
		// snapshot that called Restore): closing here would wedge the node.
		// So the old file closes in the background once its last reader
		// is done; the rename below replaces the path, and the old inode
		// (and its lock) lives on until then.
		old := f.db
		f.db = nil
		f.oldDBs.Add(1)
		go func() {
			defer f.oldDBs.Done()
			if err := old.Close(); err != nil {
				f.log.Warn("closing the state file a restore replaced", "err", err)
			}
		}()
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("%w: rename: %v", ErrRestore, err)
	}
	if err := f.open(); err != nil {
		return fmt.Errorf("%w: reopen: %v", ErrRestore, err)
	}
	f.restores.Add(1)
	f.log.Info("restored state from snapshot", "applied_index", f.applied.Load())
	f.setApplied(f.applied.Load())
	return nil
}

// validateStateFile checks that the file at path (size bytes) is a state
// file bbolt can read in full: not truncated and with a meta bucket; deep
// also has bbolt check every page and its free list. inspect, when set,
// then reads the valid file in the same transaction.
func validateStateFile(path string, size int64, deep bool, inspect func(*bolt.Tx)) error {
	check, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("not a state file: %v", err)
	}
	defer check.Close()
	return func() (err error) {
		// bbolt asserts (panics) on pages that are inconsistent.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("corrupt state file: %v", r)
			}
		}()
		return check.View(func(tx *bolt.Tx) error {
			// A truncated file has pages beyond its end; reading them
			// through the mmap would kill the process with SIGBUS.
			if size < tx.Size() {
				return fmt.Errorf("truncated: %d bytes, state needs %d", size, tx.Size())
			}
			if tx.Bucket(bMeta) == nil {
				return errors.New("no meta bucket")
			}
			var first error
			if deep {
				for cerr := range tx.Check() { // drained: the checker owns tx until it closes
					if first == nil {
						first = fmt.Errorf("corrupt state file: %v", cerr)
					}
				}
			}
			if first == nil && inspect != nil {
				inspect(tx)
			}
			return first
		})
	}()
}

// View runs fn on the local state as of the last applied entry: the
// layers not yet in the file over a bbolt read transaction. It holds off
// the apply loop for as long as fn runs. fn must only read.
func (f *FSM) View(fn func(v *View) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	f.txMu.Lock()
	defer f.txMu.Unlock()
	base, err := f.db.Begin(false)
	if err != nil {
		return err
	}
	defer base.Rollback()
	return fn(&View{tx: newStx(base, f.layersLocked(), false)})
}

// RecentHash is Hash for status displays: while the state keeps changing
// it returns the last walk's hash and index if that walk is younger than
// maxAge, so frequent status calls on a busy node walk a large state at
// most once per maxAge. The index always says which state the hash is of.
func (f *FSM) RecentHash(maxAge time.Duration) (hash string, index uint64, err error) {
	// One walk at a time: callers that waited for a walk find its result.
	f.walkMu.Lock()
	defer f.walkMu.Unlock()
	f.hashMu.Lock()
	if f.hashValue != "" && f.hashGen == f.restores.Load() && time.Since(f.hashAt) < maxAge {
		hash, index = f.hashValue, f.hashIndex
		f.hashMu.Unlock()
		return hash, index, nil
	}
	f.hashMu.Unlock()
	return f.Hash()
}

// StatusHash is the hash for status calls, which must answer at once
// whatever the state's size: it returns the last walk's hash and index
// and, when that walk is older than maxAge, starts a new one in the
// background (one at a time, and no sooner than ten times the last walk's
// duration after it, so polling a large state costs at most about a tenth
// of a core). Only the first call, with no walk yet, walks synchronously.
// The index always says which state the hash is of.
func (f *FSM) StatusHash(maxAge time.Duration) (hash string, index uint64, err error) {
	f.hashMu.Lock()
	if f.hashValue == "" || f.hashGen != f.restores.Load() {
		f.hashMu.Unlock()
		return f.RecentHash(maxAge)
	}
	hash, index = f.hashValue, f.hashIndex
	age := time.Since(f.hashAt)
	if age >= maxAge && age >= 10*f.hashTook && !f.hashWalking {
		f.hashWalking = true
		go func() {
			_, _, _ = f.RecentHash(maxAge)
			f.hashMu.Lock()
			f.hashWalking = false
			f.hashMu.Unlock()
		}()
	}
	f.hashMu.Unlock()
	return hash, index, nil
}

// viewCommitted runs fn in a read transaction on what is committed to the
// state file, which may be behind the applied state.
func (f *FSM) viewCommitted(fn func(v *View) error) error {
	return f.viewFile(func(tx *bolt.Tx) error { return fn(&View{tx: newStx(tx, nil, false)}) })
}

// viewFile runs fn in a bbolt read transaction of the state file.
func (f *FSM) viewFile(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(fn)
}

// Hash returns a digest over every bucket except the applied index and term,
// together with the applied index it describes. Two nodes at the same index
// must have the same hash.
// The walk is cached per applied index, so status polling costs one walk
// per change of state, not one per call.
func (f *FSM) Hash() (hash string, index uint64, err error) {
	// Walk the file after a checkpoint, not the layers: the walk is long
	// and must not hold off the apply loop.
	if err := f.Flush(); err != nil {
		return "", 0, err
	}
	err = f.viewFile(func(tx *bolt.Tx) error {
		index = getU64(tx.Bucket(bMeta), kAppliedIndex)
		f.hashMu.Lock()
		if f.hashIndex == index && f.hashValue != "" && f.hashGen == f.restores.Load() {
			hash = f.hashValue
			f.hashMu.Unlock()
			return nil
		}
		f.hashMu.Unlock()
		start := time.Now()
		h := sha256.New()
		werr := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return hashBucket(h, [][]byte{name}, b)
		})
		hash = hex.EncodeToString(h.Sum(nil)[:16])
		if werr == nil {
			f.hashMu.Lock()
			f.hashIndex, f.hashValue, f.hashGen, f.hashAt = index, hash, f.restores.Load(), time.Now()
			f.hashTook = time.Since(start)
			f.hashMu.Unlock()
		}
		return werr
	})
	return hash, index, err
}

func hashBucket(h io.Writer, path [][]byte, b *bolt.Bucket) error {
	isMeta := len(path) == 1 && bytes.Equal(path[0], bMeta)
	return b.ForEach(func(k, v []byte) error {
		if isMeta && (bytes.Equal(k, kAppliedIndex) || bytes.Equal(k, kAppliedTerm)) {
			return nil
		}
		for _, p := range path {
			writeLen(h, p)
		}
		writeLen(h, k)
		if v == nil {
			return hashBucket(h, append(path, k), b.Bucket(k))
		}
		writeLen(h, v)
		return nil
	})
}

func writeLen(h io.Writer, p []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
	h.Write(p)
}

func getU64(b interface{ Get([]byte) []byte }, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *sbucket, k []byte, v uint64) {
	if err := b.Put(k, u64key(v)); err != nil {
		panic(fmt.Sprintf("fsm: put %s: %v", k, err))
	}
}
