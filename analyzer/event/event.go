// Package event defines what every trace decoder produces and the replay
// consumes: allocation events, call stacks, loaded modules and process
// facts. A libleak trace and a glibc mtrace file both decode to these.
package event

// Kind is what happened to memory.
type Kind uint8

const (
	Alloc   Kind = iota + 1 // Addr, Size new; Time after the allocator returned
	Free                    // Addr released; Time before the allocator was called
	Realloc                 // OldAddr released at Time, Addr/Size made at Time2
	Mmap                    // Addr, Size mapped; Time after
	Munmap                  // Addr, Size unmapped; Time before
	Mremap                  // OldAddr/OldSize released at Time, Addr/Size mapped at Time2
)

func (k Kind) String() string {
	switch k {
	case Alloc:
		return "alloc"
	case Free:
		return "free"
	case Realloc:
		return "realloc"
	case Mmap:
		return "mmap"
	case Munmap:
		return "munmap"
	case Mremap:
		return "mremap"
	}
	return "unknown"
}

// Op is the exact API entry point called. Its values are the trace format's
// (docs/trace-format.md) and never change.
type Op uint8

const (
	OpMalloc Op = iota + 1
	OpCalloc
	OpRealloc
	OpReallocarray
	OpFree
	OpPosixMemalign
	OpAlignedAlloc
	OpMemalign
	OpValloc
	OpPvalloc
	OpNew         // operator new (all plain variants: nothrow, aligned)
	OpNewArray    // operator new[]
	OpDelete      // operator delete (all variants: sized, aligned, nothrow)
	OpDeleteArray // operator delete[]
	OpMmap
	OpMunmap
	OpMremap
	OpStrdup // only from mtrace input: the caller is the only frame
)

var opNames = [...]string{"", "malloc", "calloc", "realloc", "reallocarray", "free",
	"posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc",
	"operator new", "operator new[]", "operator delete", "operator delete[]",
	"mmap", "munmap", "mremap", "strdup"}

func (o Op) String() string {
	if int(o) < len(opNames) && o != 0 {
		return opNames[o]
	}
	return "op?"
}

// Family groups ops whose blocks must be released by a matching op.
type Family uint8

const (
	FamilyNone Family = iota
	FamilyMalloc
	FamilyNew
	FamilyNewArray
	FamilyMmap
)

func (f Family) String() string {
	return [...]string{"none", "malloc", "new", "new[]", "mmap"}[f]
}

// Family tells which family an op allocates or releases.
func (o Op) Family() Family {
	switch o {
	case OpNew, OpDelete:
		return FamilyNew
	case OpNewArray, OpDeleteArray:
		return FamilyNewArray
	case OpMmap, OpMunmap, OpMremap:
		return FamilyMmap
	case 0:
		return FamilyNone
	}
	return FamilyMalloc
}

// Mmap flags carried in Event.Flags.
const (
	MapAnonymous = 1 << 0 // no file behind the mapping
	MapShared    = 1 << 1
	MapFile      = 1 << 2
)

// Event is one allocation-API call. Times are nanoseconds since the
// process's trace started. Stack 0 means no stack was recorded.
type Event struct {
	Kind    Kind
	Op      Op
	Tid     uint32
	Time    uint64
	Time2   uint64
	Addr    uint64
	Size    uint64
	OldAddr uint64
	OldSize uint64
	Stack   uint64
	Flags   uint32
}

// Module is one loaded object (executable, shared library, vdso) at the
// moment it was seen loaded.
type Module struct {
	Path     string
	Base     uint64 // load bias: runtime address = file virtual address + Base
	BuildID  []byte
	Segments []Segment
	Time     uint64 // when it was seen loaded
	Unloaded uint64 // when it was dlclosed (0 = still loaded at exit)
}

// Segment is one PT_LOAD segment in runtime addresses.
type Segment struct {
	Start, End uint64
	Exec       bool
	Writable   bool
}

// Header holds the facts about a traced process.
type Header struct {
	Version   int
	Pid       int
	Ppid      int
	Exe       string
	Cmdline   []string
	StartUnix int64  // wall-clock start, ns since the Unix epoch
	Clock     string // clock the event times come from
	Unwinder  string
	Depth     int
	// Forked is set in a child's trace: blocks it frees may come from
	// before the fork, which its trace does not hold.
	Forked bool
	// Tracer is the path of the libleak.so that wrote the trace: its
	// frames are the tracer's, never the program's.
	Tracer string
}

// Handler receives what a decoder reads, in file order.
type Handler interface {
	Header(h *Header)
	Module(m *Module)
	Stack(id uint64, pcs []uint64)
	Event(e *Event)
}

// BatchHandler is implemented by handlers that take a run of consecutive
// events in one call, which saves a call per event on the hot path. The
// slice is only valid during the call.
type BatchHandler interface {
	EventBatch(evs []Event)
}

// Rec is an event in the compact form a decoder can hand a RecHandler.
// Nearly every event of a trace is a heap allocation, free or realloc, and
// those fit in 24 bytes (a realloc in two records) where an Event takes
// 72: the decoder writes, and the replay reads, a third of the memory.
//
// Info holds the kind (top 3 bits), the op (the next 5) and 56 bits that
// depend on the kind. A record of Kind Alloc or Free is the event itself:
// Time, Addr, and for an allocation its size (below 2^32) and stack id
// (below 2^24); the thread is the batch's. A Realloc that moved a block is
// two records with the same Time: the first has the old address and
// Time2 - Time (below 2^56), the second is the new block as an
// allocation's. A record of Kind 0 stands for the Event at index Index()
// of the batch's events; only its Time is meaningful here.
type Rec struct {
	Time, Addr, Info uint64
}

// Limits of the compact form: larger values travel as whole Events.
const (
	RecMaxSize  = 1<<32 - 1
	RecMaxStack = 1<<24 - 1
	RecMaxDelta = 1<<56 - 1
)

func (r *Rec) Kind() Kind          { return Kind(r.Info >> 61) }
func (r *Rec) Op() Op              { return Op(r.Info >> 56 & 31) }
func (r *Rec) Size() uint64        { return r.Info & RecMaxSize }
func (r *Rec) Stack() uint64       { return r.Info >> 32 & RecMaxStack }
func (r *Rec) Delta() uint64       { return r.Info & RecMaxDelta }
func (r *Rec) Index() int          { return int(r.Info & RecMaxDelta) }
func recInfo(k Kind, op Op) uint64 { return uint64(k)<<61 | uint64(op&31)<<56 }

// AllocRec is an allocation; size and stack must be within the limits.
func AllocRec(t, addr, size, stack uint64, op Op) Rec {
	return Rec{t, addr, recInfo(Alloc, op) | stack<<32 | size}
}

// FreeRec is a free.
func FreeRec(t, addr uint64, op Op) Rec { return Rec{t, addr, recInfo(Free, op)} }

// ReallocRecs is a realloc that moved the block at old, at time t, to
// addr, at t + delta; delta, size and stack must be within the limits.
func ReallocRecs(t, delta, old, addr, size, stack uint64, op Op) (Rec, Rec) {
	return Rec{t, old, recInfo(Realloc, op) | delta}, Rec{t, addr, recInfo(Realloc, op) | stack<<32 | size}
}

// EventRec stands for the event at index i of its batch's events.
func EventRec(t uint64, i int) Rec { return Rec{Time: t, Info: uint64(i)} }

// RecHandler is implemented by handlers that take runs of events in the
// compact form: recs, all of thread tid, in order, with the full events
// that records of Kind 0 refer to. Both slices are only valid during the
// call.
type RecHandler interface {
	Recs(tid uint32, recs []Rec, evs []Event)
}

// AppendEvents appends recs, of thread tid, to out as Events; evs are the
// full events of their batch.
func AppendEvents(out []Event, tid uint32, recs []Rec, evs []Event) []Event {
	for i := 0; i < len(recs); i++ {
		r := &recs[i]
		switch r.Kind() {
		case 0:
			out = append(out, evs[r.Index()])
		case Realloc:
			n := &recs[i+1]
			out = append(out, Event{Kind: Realloc, Op: r.Op(), Tid: tid, Time: r.Time, Time2: r.Time + r.Delta(),
				OldAddr: r.Addr, Addr: n.Addr, Size: n.Size(), Stack: n.Stack()})
			i++
		case Alloc:
			out = append(out, Event{Kind: Alloc, Op: r.Op(), Tid: tid, Time: r.Time, Addr: r.Addr, Size: r.Size(), Stack: r.Stack()})
		default:
			out = append(out, Event{Kind: r.Kind(), Op: r.Op(), Tid: tid, Time: r.Time, Addr: r.Addr})
		}
	}
	return out
}

// Verdict kinds of the exit-time reachability scan.
const (
	VerdictDefinite = 1
	VerdictIndirect = 2
	VerdictPossible = 3
)

// Verdict is the scan's finding for one live block that is not reachable.
type Verdict struct {
	Addr     uint64
	Kind     uint8
	Indirect uint64 // for definite blocks: bytes of the blocks only it points to
	Content  []byte // first bytes of the block, with LEAK_CONTENT
}

// Scan is one reachability scan of a process. Live blocks without a
// verdict were reachable.
type Scan struct {
	Time     uint64
	Blocks   uint64
	Verdicts []Verdict
}

// ScanHandler is implemented by handlers that want scan results.
type ScanHandler interface {
	Scan(s *Scan)
}
