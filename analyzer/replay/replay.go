// Package replay rebuilds, from one process's event stream, which blocks
// and mappings were still live when the trace ended, the misuses seen on
// the way (invalid or mismatched frees), the peak footprint, and each
// allocation site's growth.
//
// Threads write their events to separate buffers, so a trace orders a
// thread's own events but not events of different threads. The replay
// therefore orders by time per address: a free releases the block at its
// address with the latest allocation time not after the free, and a free
// that arrives before its allocation waits for it. Times are taken so that
// this is exact: allocations after the allocator returned, frees before
// it was called.
package replay

import (
	"sort"

	"libleak/analyzer/event"
)

// Block is one live allocation.
type Block struct {
	Addr, Size uint64
	Time       uint64
	Stack      uint64
	Op         event.Op
	Tid        uint32
	Flags      uint32 // mmap flags
}

// Anomaly types.
const (
	InvalidFree   = "invalid-free"     // free of a pointer never allocated (or freed twice)
	Mismatch      = "mismatched-free"  // e.g. new / free, malloc / delete, new[] / delete
	InvalidMunmap = "invalid-munmap"   // a second munmap of a traced mapping
	LostFree      = "untraced-release" // a block's address was handed out again without a traced free
)

// Anomaly is one misuse.
type Anomaly struct {
	Type  string
	Addr  uint64
	Time  uint64
	Stack uint64 // the allocation's stack where known (mismatch), else 0
	Op    event.Op
	Alloc event.Op // the allocating op, for mismatches
}

// Site is the running account of one allocation stack.
type Site struct {
	Stack         uint64
	Live, Peak    uint64 // bytes
	PeakTime      uint64
	First, Last   uint64 // times of the first and last allocation
	Allocs, Frees uint64
	AllocBytes    uint64
}

// Replay consumes events. It implements event.Handler.
type Replay struct {
	Hdr     event.Header
	Modules []*event.Module
	Stacks  map[uint64][]uint64

	heap      blockTable
	siteVec   []*Site // Sites by stack id, for ids that are small
	displaced map[uint64][]Block
	pending   map[uint64][]pendingFree
	maps      []Block // live mappings, sorted by Addr, non-overlapping
	unmapped  map[uint64]bool

	Anomalies []Anomaly
	Sites     map[uint64]*Site
	// Verdicts holds the last reachability scan's findings by address; nil
	// when the process was not scanned.
	Verdicts map[uint64]event.Verdict
	ScanTime uint64
	Scans    []*event.Scan // every scan, in time order

	touched   uint64 // sum of Recs' early loads, kept so they are not dropped
	cur, Peak uint64
	PeakTime  uint64
	LastTime  uint64
	Events    uint64
}

type pendingFree struct {
	time uint64
	op   event.Op
}

// New returns an empty replay.
func New() *Replay {
	r := &Replay{
		Stacks:    map[uint64][]uint64{},
		displaced: map[uint64][]Block{},
		pending:   map[uint64][]pendingFree{},
		Sites:     map[uint64]*Site{},
		unmapped:  map[uint64]bool{},
	}
	r.heap.init(1024)
	return r
}

func (r *Replay) Header(h *event.Header) { r.Hdr = *h }

func (r *Replay) Module(m *event.Module) {
	for _, old := range r.Modules {
		if old == m {
			return // an unload record updates the module already held
		}
	}
	r.Modules = append(r.Modules, m)
}

func (r *Replay) Stack(id uint64, pcs []uint64) {
	r.Stacks[id] = append([]uint64(nil), pcs...)
}

func (r *Replay) site(stack uint64) *Site {
	if stack < uint64(len(r.siteVec)) {
		if s := r.siteVec[stack]; s != nil {
			return s
		}
	}
	s := r.Sites[stack]
	if s == nil {
		s = &Site{Stack: stack}
		r.Sites[stack] = s
	}
	if stack < 1<<22 {
		for stack >= uint64(len(r.siteVec)) {
			r.siteVec = append(r.siteVec, make([]*Site, len(r.siteVec)+1024)...)
		}
		r.siteVec[stack] = s
	}
	return s
}

func (r *Replay) grow(b *Block) { r.growBy(b.Size, b.Time, b.Stack) }

func (r *Replay) growBy(size, t, stack uint64) {
	r.cur += size
	if r.cur > r.Peak {
		r.Peak, r.PeakTime = r.cur, t
	}
	s := r.site(stack)
	if s.Allocs == 0 {
		s.First = t
	}
	s.Allocs++
	s.AllocBytes += size
	s.Last = t
	s.Live += size
	if s.Live > s.Peak {
		s.Peak, s.PeakTime = s.Live, t
	}
}

func (r *Replay) shrink(b *Block) {
	r.cur -= b.Size
	s := r.site(b.Stack)
	s.Live -= b.Size
	s.Frees++
}

// EventBatch applies a run of events (event.BatchHandler).
func (r *Replay) EventBatch(evs []event.Event) {
	for i := range evs {
		r.Event(&evs[i])
	}
}

// Recs applies a run of one thread's events in compact form
// (event.RecHandler).
func (r *Replay) Recs(tid uint32, recs []event.Rec, evs []event.Event) {
	last := r.LastTime
	var n, touched uint64
	for i := 0; i < len(recs); i++ {
		x := &recs[i]
		// Load the table slot of the record a few ahead: its address's
		// line, which mostly misses the cache, is then on its way while
		// this record is applied.
		if j := i + prefetchAhead; j < len(recs) {
			touched += r.heap.ents[hashAddr(recs[j].Addr)&r.heap.mask].addr
		}
		switch x.Kind() {
		case event.Alloc:
			last = max(last, x.Time)
			n++
			r.allocRec(x.Addr, x.Size(), x.Time, x.Stack(), x.Op(), tid)
		case event.Free:
			last = max(last, x.Time)
			n++
			r.free(x.Addr, x.Time, x.Op())
		case event.Realloc:
			y := &recs[i+1]
			i++
			t2 := x.Time + x.Delta()
			last = max(last, x.Time, t2)
			n++
			r.free(x.Addr, x.Time, x.Op())
			r.allocRec(y.Addr, y.Size(), t2, y.Stack(), y.Op(), tid)
		default:
			r.LastTime = last
			r.Event(&evs[x.Index()])
			last = r.LastTime
		}
	}
	r.LastTime = last
	r.Events += n
	r.touched += touched
}

// prefetchAhead is how many records ahead Recs loads table slots.
const prefetchAhead = 8

// Event applies one event.
func (r *Replay) Event(e *event.Event) {
	r.Events++
	t := e.Time
	if e.Time2 > t {
		t = e.Time2
	}
	if t > r.LastTime {
		r.LastTime = t
	}
	switch e.Kind {
	case event.Alloc:
		r.alloc(Block{Addr: e.Addr, Size: e.Size, Time: e.Time, Stack: e.Stack, Op: e.Op, Tid: e.Tid})
	case event.Free:
		r.free(e.Addr, e.Time, e.Op)
	case event.Realloc:
		r.free(e.OldAddr, e.Time, e.Op)
		r.alloc(Block{Addr: e.Addr, Size: e.Size, Time: e.Time2, Stack: e.Stack, Op: e.Op, Tid: e.Tid})
	case event.Mmap:
		r.mmap(Block{Addr: e.Addr, Size: e.Size, Time: e.Time, Stack: e.Stack, Op: e.Op, Tid: e.Tid, Flags: e.Flags})
	case event.Munmap:
		r.munmap(e.Addr, e.Size, e.Time, true)
	case event.Mremap:
		r.munmap(e.OldAddr, e.OldSize, e.Time, true)
		r.mmap(Block{Addr: e.Addr, Size: e.Size, Time: e.Time2, Stack: e.Stack, Op: e.Op, Tid: e.Tid, Flags: event.MapAnonymous})
	}
}

// allocRec is alloc for a compact record. In the usual case, no free
// waiting for the block and no other block at its address, it writes the
// table slot from the fields without making a Block.
func (r *Replay) allocRec(addr, size, t, stack uint64, op event.Op, tid uint32) {
	if len(r.pending) == 0 {
		if i, ok := r.heap.find(addr); !ok && r.heap.insertAt(i, ent{addr: addr, size: size, time: t, stack: stack, tid: tid, op: op}) {
			r.growBy(size, t, stack)
			return
		}
	}
	r.alloc(Block{Addr: addr, Size: size, Time: t, Stack: stack, Op: op, Tid: tid})
}

func (r *Replay) alloc(b Block) {
	r.grow(&b)
	// A free of this block that was read before it?
	if len(r.pending) == 0 {
		// The common case: no free is waiting for its allocation.
	} else if pf := r.pending[b.Addr]; len(pf) > 0 {
		best := -1
		for i, p := range pf {
			if p.time >= b.Time && (best < 0 || p.time < pf[best].time) {
				best = i
			}
		}
		if best >= 0 {
			r.checkFamily(&b, pf[best].op, pf[best].time)
			r.pending[b.Addr] = append(pf[:best], pf[best+1:]...)
			if len(r.pending[b.Addr]) == 0 {
				delete(r.pending, b.Addr)
			}
			r.shrink(&b)
			return
		}
	}
	i, ok := r.heap.find(b.Addr)
	if ok {
		// Two blocks at one address: one of them was released by a free
		// that is still to come, or by none we could see.
		old := r.heap.ents[i].block()
		if old.Time <= b.Time {
			r.displaced[b.Addr] = append(r.displaced[b.Addr], old)
			r.heap.ents[i] = toEnt(&b)
		} else {
			r.displaced[b.Addr] = append(r.displaced[b.Addr], b)
		}
		return
	}
	if e := toEnt(&b); !r.heap.insertAt(i, e) {
		r.heap.put(e)
	}
}

func (r *Replay) free(addr, t uint64, op event.Op) {
	if addr == 0 {
		return
	}
	slot, ok := r.heap.find(addr)
	var dis []Block
	if len(r.displaced) > 0 {
		dis = r.displaced[addr]
	}
	if ok && len(dis) == 0 {
		// The usual free: the block at addr, allocated before it, and no
		// other block waiting for a free at that address.
		if e := &r.heap.ents[slot]; e.time <= t {
			if families[e.op] != families[op] {
				b := e.block()
				r.checkFamily(&b, op, t)
			}
			r.cur -= e.size
			s := r.site(e.stack)
			s.Live -= e.size
			s.Frees++
			r.heap.delAt(slot)
			return
		}
	}
	var cur Block
	if ok {
		cur = r.heap.ents[slot].block()
	}
	// The block freed is the one at addr allocated last before t.
	best := -1
	if ok && cur.Time <= t {
		best = len(dis)
	}
	for i, b := range dis {
		if b.Time <= t && (best < 0 || (best == len(dis) && b.Time > cur.Time) || (best < len(dis) && b.Time > dis[best].Time)) {
			best = i
		}
	}
	switch {
	case best == len(dis):
		r.checkFamily(&cur, op, t)
		r.shrink(&cur)
		if len(dis) > 0 {
			// The newest displaced block takes its place.
			j := newest(dis)
			r.heap.ents[slot] = toEnt(&dis[j])
			r.setDisplaced(addr, append(dis[:j], dis[j+1:]...))
		} else {
			r.heap.delAt(slot)
		}
	case best >= 0:
		b := dis[best]
		r.checkFamily(&b, op, t)
		r.shrink(&b)
		r.setDisplaced(addr, append(dis[:best], dis[best+1:]...))
	default:
		r.pending[addr] = append(r.pending[addr], pendingFree{t, op})
	}
}

func newest(bs []Block) int {
	j := 0
	for i, b := range bs {
		if b.Time > bs[j].Time {
			j = i
		}
	}
	return j
}

func (r *Replay) setDisplaced(addr uint64, bs []Block) {
	if len(bs) == 0 {
		delete(r.displaced, addr)
	} else {
		r.displaced[addr] = bs
	}
}

// families is Op.Family as a table, for the per-free check.
var families = func() (f [256]event.Family) {
	for op := range f {
		f[op] = event.Op(op).Family()
	}
	return f
}()

func (r *Replay) checkFamily(b *Block, op event.Op, t uint64) {
	if b.Op.Family() != op.Family() {
		r.Anomalies = append(r.Anomalies, Anomaly{Type: Mismatch, Addr: b.Addr, Time: t, Stack: b.Stack, Op: op, Alloc: b.Op})
	}
}

// ---- mappings ----------------------------------------------------------------

func (r *Replay) mmap(b Block) {
	// A mapping occupies whole pages; a new one replaces whatever it
	// overlaps (MAP_FIXED).
	b.Size = pageUp(b.Size)
	r.munmap(b.Addr, b.Size, b.Time, false)
	delete(r.unmapped, b.Addr)
	r.grow(&b)
	i := sort.Search(len(r.maps), func(i int) bool { return r.maps[i].Addr >= b.Addr })
	r.maps = append(r.maps, Block{})
	copy(r.maps[i+1:], r.maps[i:])
	r.maps[i] = b
}

// munmap removes [addr, addr+size) from the live mappings, splitting those
// it cuts. It reports an anomaly when a real munmap hit nothing.
func (r *Replay) munmap(addr, size, t uint64, explicit bool) {
	end := addr + pageUp(size)
	i := sort.Search(len(r.maps), func(i int) bool { return r.maps[i].Addr+r.maps[i].Size > addr })
	var keep []Block
	j := i
	for ; j < len(r.maps) && r.maps[j].Addr < end; j++ {
		m := r.maps[j]
		mEnd := m.Addr + m.Size
		if m.Addr < addr {
			k := m
			k.Size = addr - m.Addr
			keep = append(keep, k)
		}
		if mEnd > end {
			k := m
			k.Addr, k.Size = end, mEnd-end
			keep = append(keep, k)
		}
		cut := min(mEnd, end) - max(m.Addr, addr)
		r.cur -= cut
		s := r.site(m.Stack)
		s.Live -= cut
		s.Frees++
	}
	switch {
	case j > i:
		r.maps = append(r.maps[:i], append(keep, r.maps[j:]...)...)
		if explicit {
			r.unmapped[addr] = true
		}
	case explicit && r.unmapped[addr]:
		// Only a second munmap of a traced mapping is flagged: libc and
		// ld.so map memory without going through mmap's symbol, and
		// unmapping nothing is not an error.
		r.Anomalies = append(r.Anomalies, Anomaly{Type: InvalidMunmap, Addr: addr, Time: t, Op: event.OpMunmap})
	}
}

func pageUp(n uint64) uint64 { return (n + 4095) &^ 4095 }

// Finish resolves what is left: frees that never found their allocation
// are invalid frees — except in a forked child, whose blocks from before
// the fork are not in its trace — and blocks displaced without a free
// lost their free to something untraced.
func (r *Replay) Finish() {
	for addr, pf := range r.pending {
		if r.Hdr.Forked {
			continue
		}
		for _, p := range pf {
			r.Anomalies = append(r.Anomalies, Anomaly{Type: InvalidFree, Addr: addr, Time: p.time, Op: p.op})
		}
	}
	r.pending = map[uint64][]pendingFree{}
	for addr, bs := range r.displaced {
		for _, b := range bs {
			r.Anomalies = append(r.Anomalies, Anomaly{Type: LostFree, Addr: addr, Time: b.Time, Stack: b.Stack, Alloc: b.Op})
			r.shrink(&b)
		}
	}
	r.displaced = map[uint64][]Block{}
	sort.Slice(r.Anomalies, func(i, j int) bool {
		a, b := r.Anomalies[i], r.Anomalies[j]
		if a.Time != b.Time {
			return a.Time < b.Time
		}
		return a.Addr < b.Addr
	})
}

// Live returns the blocks and mappings still live, heap first, each sorted
// by address.
func (r *Replay) Live() (heap, maps []Block) {
	heap = make([]Block, 0, r.heap.n)
	r.heap.each(func(b Block) { heap = append(heap, b) })
	sort.Slice(heap, func(i, j int) bool { return heap[i].Addr < heap[j].Addr })
	return heap, append([]Block(nil), r.maps...)
}

// Scan keeps a reachability scan; the verdicts in use are the last scan's
// until UseScan picks another.
func (r *Replay) Scan(s *event.Scan) {
	r.Scans = append(r.Scans, s)
	r.UseScan(len(r.Scans))
}

// UseScan selects scan n (1 = the first) for Verdicts; it reports whether
// there is such a scan.
func (r *Replay) UseScan(n int) bool {
	if n < 1 || n > len(r.Scans) {
		return false
	}
	s := r.Scans[n-1]
	r.Verdicts = make(map[uint64]event.Verdict, len(s.Verdicts))
	for _, v := range s.Verdicts {
		r.Verdicts[v.Addr] = v
	}
	r.ScanTime = s.Time
	return true
}
