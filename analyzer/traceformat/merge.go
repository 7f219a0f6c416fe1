package traceformat

import (
	"sync"

	"libleak/analyzer/event"
)

// The decode is three goroutines: the frame reader (read, checksum,
// decompress), the parse (the caller's), and the merger, which orders the
// parsed runs by time and calls the handler. Giving the merger whole runs
// lets the handler read events where the parse wrote them: no copy
// between parse and replay, and the merge and the replay run beside the
// parse instead of after it. The handler is called on the merger's
// goroutine, in the order a single-threaded decode would call it, and
// never after Decode returns.

// mop is one step for the merger, in file order.
type mop struct {
	kind uint8
	id   uint64 // stack id; release limit
	pcs  []uint64
	run  *run
	mod  *event.Module
	hdr  *event.Header
	scan *event.Scan
}

const (
	mopStack = iota + 1
	mopModule
	mopUnload
	mopHeader
	mopScan
	mopRun
	mopRelease
)

// merger's fields other than in, free and done belong to its goroutine.
type merger struct {
	h     event.Handler
	rh    event.RecHandler   // h, when it takes compact records
	bh    event.BatchHandler // h, when it takes runs of events
	sh    event.ScanHandler
	evs   []event.Event // records made events, for a handler that is not rh
	runs  []*run
	scans []*event.Scan // read, waiting for the events older than them

	pending []mop // the parse's steps not yet sent
	in      chan []mop
	spare   chan []mop
	mu      sync.Mutex
	free    []*run // consumed runs, back to the parse
	done    chan struct{}
}

func newMerger(h event.Handler) *merger {
	m := &merger{h: h, in: make(chan []mop, 1), spare: make(chan []mop, 3), done: make(chan struct{})}
	m.rh, _ = h.(event.RecHandler)
	m.bh, _ = h.(event.BatchHandler)
	m.sh, _ = h.(event.ScanHandler)
	go func() {
		defer close(m.done)
		for ops := range m.in {
			for i := range ops {
				m.do(&ops[i])
				ops[i] = mop{}
			}
			select {
			case m.spare <- ops[:0]:
			default:
			}
		}
	}()
	return m
}

// add queues a step; flush sends the queued steps. Both run on the parse.
func (m *merger) add(o mop) { m.pending = append(m.pending, o) }

func (m *merger) flush() {
	if len(m.pending) == 0 {
		return
	}
	m.in <- m.pending
	select {
	case m.pending = <-m.spare:
	default:
		m.pending = nil
	}
}

// finish sends what is queued and waits until the handler has had it all.
func (m *merger) finish() {
	m.flush()
	close(m.in)
	<-m.done
}

const runRecs = 8192

// newRun returns an empty run, reusing one the merger is done with. A new
// one has room for a buffer's worth of records (a 64 KiB buffer holds
// about 5,500 events): grown from empty by append, its records were
// copied at every doubling, 5% of the decode's CPU time, on the
// goroutine that sets its pace.
func (m *merger) newRun() *run {
	m.mu.Lock()
	n := len(m.free)
	if n == 0 {
		m.mu.Unlock()
		return &run{recs: make([]event.Rec, 0, runRecs)}
	}
	r := m.free[n-1]
	m.free = m.free[:n-1]
	m.mu.Unlock()
	r.recs, r.evs, r.pos = r.recs[:0], r.evs[:0], 0
	return r
}

// recycle keeps a run for newRun. A frame has a piece per buffer a thread
// filled (a dozen or more), so every run in flight comes back here.
func (m *merger) recycle(r *run) {
	m.mu.Lock()
	m.free = append(m.free, r)
	m.mu.Unlock()
}

func (m *merger) do(o *mop) {
	switch o.kind {
	case mopStack:
		m.h.Stack(o.id, o.pcs)
	case mopModule:
		m.h.Module(o.mod)
	case mopUnload:
		o.mod.Unloaded = o.id
		m.h.Module(o.mod)
	case mopHeader:
		m.h.Header(o.hdr)
	case mopScan:
		m.scans = append(m.scans, o.scan)
	case mopRun:
		m.runs = append(m.runs, o.run)
	case mopRelease:
		m.release(o.id)
	}
}

// release hands on, in time order, the buffered events older than limit.
// Each run is one thread's piece and already in time order, so this is a
// merge of the runs' heads.
func (m *merger) release(limit uint64) {
	for {
		best := -1
		var bt uint64
		for i, r := range m.runs {
			if r.pos < len(r.recs) {
				if t := r.recs[r.pos].Time; t < limit && (best < 0 || t < bt) {
					best, bt = i, t
				}
			}
		}
		if len(m.scans) > 0 && m.scans[0].Time < limit && (best < 0 || m.scans[0].Time <= bt) {
			m.sh.Scan(m.scans[0])
			m.scans = m.scans[1:]
			continue
		}
		if best < 0 {
			break
		}
		r := m.runs[best]
		// Take the run's events up to the next head of another run (or
		// the next scan).
		next := limit
		if len(m.scans) > 0 && m.scans[0].Time-1 < next {
			next = m.scans[0].Time - 1
		}
		for i, o := range m.runs {
			if i != best && o.pos < len(o.recs) && o.recs[o.pos].Time < next {
				next = o.recs[o.pos].Time
			}
		}
		end := r.pos
		if next >= limit {
			// Events before limit only: the bound is the same either way.
			next = limit - 1
		}
		for end < len(r.recs) && r.recs[end].Time <= next {
			end++
		}
		m.hand(r, r.recs[r.pos:end])
		r.pos = end
	}
	kept := m.runs[:0]
	for _, r := range m.runs {
		if r.pos < len(r.recs) {
			kept = append(kept, r)
		} else {
			m.recycle(r)
		}
	}
	for i := len(kept); i < len(m.runs); i++ {
		m.runs[i] = nil
	}
	m.runs = kept
}

// hand gives the handler recs, a part of run r.
func (m *merger) hand(r *run, recs []event.Rec) {
	if m.rh != nil {
		m.rh.Recs(r.tid, recs, r.evs)
		return
	}
	m.evs = event.AppendEvents(m.evs[:0], r.tid, recs, r.evs)
	if m.bh != nil {
		m.bh.EventBatch(m.evs)
		return
	}
	for i := range m.evs {
		m.h.Event(&m.evs[i])
	}
}
