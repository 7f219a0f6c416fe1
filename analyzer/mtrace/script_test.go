package mtrace

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"libleak/analyzer/event"
	"libleak/internal/testutil"
)

const (
	mtraceScript = "/usr/bin/mtrace"
	mallocDebug  = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so"
)

func needGlibcTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs programs and glibc's mtrace script")
	}
	for _, p := range []string{mtraceScript, mallocDebug} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("glibc mtrace tooling missing: %v", err)
		}
	}
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl, which runs glibc's mtrace script, is missing")
	}
}

// replay is the smallest leak check: the blocks an event stream leaves
// live. A second allocation of a live address keeps the first, as the
// mtrace script does.
type replay struct {
	live    map[uint64]uint64
	stack   map[uint64]uint64 // stack that allocated each live block
	unknown int               // releases of addresses not live
}

func newReplay() *replay { return &replay{live: map[uint64]uint64{}, stack: map[uint64]uint64{}} }

func (r *replay) Header(*event.Header)   {}
func (r *replay) Module(*event.Module)   {}
func (r *replay) Stack(uint64, []uint64) {}

func (r *replay) release(a uint64) {
	if _, ok := r.live[a]; ok {
		delete(r.live, a)
		delete(r.stack, a)
	} else {
		r.unknown++
	}
}

func (r *replay) add(a, size, stack uint64) {
	if _, ok := r.live[a]; !ok {
		r.live[a] = size
		r.stack[a] = stack
	}
}

func (r *replay) Event(e *event.Event) {
	switch e.Kind {
	case event.Alloc:
		if e.Addr != 0 {
			r.add(e.Addr, e.Size, e.Stack)
		}
	case event.Free:
		if e.Addr != 0 {
			r.release(e.Addr)
		}
	case event.Realloc:
		switch {
		case e.OldAddr == 0:
			r.add(e.Addr, e.Size, e.Stack)
		case e.Addr == 0 && e.Size != 0:
			// Failed: the old block stays.
		default:
			r.release(e.OldAddr)
			if e.Addr != 0 {
				r.add(e.Addr, e.Size, e.Stack)
			}
		}
	}
}

// scriptResult is what glibc's mtrace script printed.
type scriptResult struct {
	leaks    map[uint64]uint64 // address -> size
	where    map[uint64]string // address -> caller as the script names it
	noLeaks  bool
	neverOwn int // "was never alloc'd" lines
	out      string
}

var leakLine = regexp.MustCompile(`^0x([0-9a-f]+) +(0x[0-9a-f]+|0)  at ?(.*)$`)

func runScript(t *testing.T, args ...string) scriptResult {
	t.Helper()
	cmd := exec.Command(mtraceScript, args...)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("mtrace %s: %v", strings.Join(args, " "), err)
	}
	res := scriptResult{leaks: map[uint64]uint64{}, where: map[uint64]string{}, out: string(out)}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "No memory leaks.":
			res.noLeaks = true
		case strings.Contains(l, "was never alloc'd"):
			res.neverOwn++
		case leakLine.MatchString(l):
			m := leakLine.FindStringSubmatch(l)
			a, _ := strconv.ParseUint(m[1], 16, 64)
			s, err := parseHex(m[2])
			if err != nil {
				t.Fatalf("script line %q: %v", l, err)
			}
			res.leaks[a] = s
			res.where[a] = m[3]
		}
	}
	// The script's exit status says whether it found leaks.
	if res.noLeaks == (len(res.leaks) > 0) || (err != nil) != (len(res.leaks) > 0) {
		t.Fatalf("mtrace script output and status disagree (%v):\n%s", err, out)
	}
	return res
}

func sameBlocks(t *testing.T, what string, got, want map[uint64]uint64) {
	t.Helper()
	var diff []string
	for a, s := range want {
		if g, ok := got[a]; !ok || g != s {
			diff = append(diff, fmt.Sprintf("%#x: want size %#x, got %#x (present %v)", a, s, g, ok))
		}
	}
	for a, s := range got {
		if _, ok := want[a]; !ok {
			diff = append(diff, fmt.Sprintf("%#x: size %#x not expected", a, s))
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Errorf("%s: %d blocks differ:\n\t%s", what, len(diff), strings.Join(diff, "\n\t"))
	}
}

// TestGlibcTrace checks the decoder against glibc's own reading of a
// trace glibc wrote: the blocks a replay of the decoded events leaves live
// are exactly those the mtrace script reports as not freed.
func TestGlibcTrace(t *testing.T) {
	needGlibcTools(t)
	bin := testutil.Program(t, "mtrace_leaks.c")
	trace := filepath.Join(t.TempDir(), "trace.mtrace")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+mallocDebug, "MALLOC_TRACE="+trace)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	var sizes []uint64
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "leaked_sizes="); ok {
			for _, s := range strings.Split(v, ",") {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("program output %q: %v", out, err)
				}
				sizes = append(sizes, n)
			}
		}
	}
	if len(sizes) != 6 {
		t.Fatalf("program output %q: want 6 leaked sizes", out)
	}

	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p Parser
	r := newReplay()
	pcs := frames{}
	if err := p.Parse(f, trace, multi{r, pcs}); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if !st.Started || !st.Ended || st.Truncated {
		t.Errorf("stats %+v: the program calls muntrace(), the trace is whole", st)
	}
	if st.FailedAllocs != 1 || st.FailedReallocs != 1 {
		t.Errorf("stats %+v: want the program's one failed malloc and one failed realloc", st)
	}

	res := runScript(t, bin, trace)
	sameBlocks(t, "replay of decoded events vs mtrace script", r.live, res.leaks)
	if r.unknown != res.neverOwn {
		t.Errorf("%d releases of unknown blocks, the script found %d", r.unknown, res.neverOwn)
	}

	// Each block the program says it leaked is in the live set, once,
	// with its caller in the program (or in strdup, which glibc names).
	callers := p.Callers()
	for _, size := range sizes {
		var found []uint64
		for a, s := range r.live {
			if s == size {
				found = append(found, a)
			}
		}
		if len(found) != 1 {
			t.Errorf("leak of %d bytes found %d times in the replay", size, len(found))
			continue
		}
		c := callers[pcs[r.stack[found[0]]]]
		switch {
		case c.Symbol == "__strdup" || c.Symbol == "strdup":
			if size != 41 {
				t.Errorf("leak of %d bytes attributed to strdup", size)
			}
		case c.Module == bin:
			if !strings.Contains(res.where[found[0]], "mtrace_leaks.c:") {
				t.Errorf("leak of %d bytes: script names its caller %q", size, res.where[found[0]])
			}
		default:
			t.Errorf("leak of %d bytes: caller %+v is not in %s", size, c, bin)
		}
	}
}

// frames remembers each stack's only frame.
type frames map[uint64]uint64

func (frames) Header(*event.Header)            {}
func (frames) Module(*event.Module)            {}
func (f frames) Stack(id uint64, pcs []uint64) { f[id] = pcs[0] }
func (frames) Event(*event.Event)              {}

type multi []event.Handler

func (m multi) Header(h *event.Header) {
	for _, x := range m {
		x.Header(h)
	}
}
func (m multi) Module(md *event.Module) {
	for _, x := range m {
		x.Module(md)
	}
}
func (m multi) Stack(id uint64, pcs []uint64) {
	for _, x := range m {
		x.Stack(id, pcs)
	}
}
func (m multi) Event(e *event.Event) {
	for _, x := range m {
		x.Event(e)
	}
}

// synthetic builds a libleak-like event stream: allocations of every op,
// frees, reallocs of every shape, address reuse, mmaps the mtrace format
// cannot hold, and stacks whose first frames are the allocator's.
type synthetic struct {
	exe, shim, libc event.Module
	stacks          map[uint64][]uint64
	events          []event.Event
	codeAddr        uint64 // pc in exe that addr2line resolves
}

func newSynthetic(t *testing.T, bin string, freeAll bool) *synthetic {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var fn uint64
	for _, s := range syms {
		if s.Name == "leak_malloc" {
			fn = s.Value
		}
	}
	if fn == 0 {
		t.Fatalf("%s: no symbol leak_malloc", bin)
	}
	const exeBase, shimBase, libcBase = 0x555555554000, 0x7f0000000000, 0x7f1000000000
	s := &synthetic{
		exe: event.Module{Path: bin, Base: exeBase,
			Segments: []event.Segment{{Start: exeBase, End: exeBase + 0x10000, Exec: true}}},
		shim: event.Module{Path: "/usr/lib/libleak.so", Base: shimBase,
			Segments: []event.Segment{{Start: shimBase, End: shimBase + 0x10000, Exec: true}}},
		libc: event.Module{Path: "/lib/x86_64-linux-gnu/libc.so.6", Base: libcBase,
			Segments: []event.Segment{{Start: libcBase, End: libcBase + 0x200000, Exec: true}}},
		codeAddr: exeBase + fn + 8,
	}
	s.stacks = map[uint64][]uint64{
		1: {shimBase + 0x120, shimBase + 0x480, s.codeAddr, exeBase + 0x1300},
		2: {shimBase + 0x120, libcBase + 0x9e9aa, exeBase + 0x1310},
		3: {0x7fffdeadbeef},
		4: {shimBase + 0x120},
	}
	rng := rand.New(rand.NewSource(1))
	ops := []event.Op{event.OpMalloc, event.OpCalloc, event.OpNew, event.OpNewArray, event.OpMemalign,
		event.OpPosixMemalign, event.OpAlignedAlloc, event.OpValloc, event.OpStrdup}
	var live, freed []uint64
	next := uint64(0x5555aaaa0000)
	newAddr := func() uint64 {
		if len(freed) > 0 && rng.Intn(2) == 0 {
			i := rng.Intn(len(freed))
			a := freed[i]
			freed = append(freed[:i], freed[i+1:]...)
			return a
		}
		next += 0x40
		return next
	}
	take := func() uint64 {
		i := rng.Intn(len(live))
		a := live[i]
		live[i] = live[len(live)-1]
		live = live[:len(live)-1]
		return a
	}
	var tm uint64
	add := func(e event.Event) {
		tm += 10
		e.Time, e.Time2, e.Tid = tm, tm+1, uint32(1+rng.Intn(4))
		e.Stack = uint64(rng.Intn(5)) // 0: no stack
		s.events = append(s.events, e)
	}
	for i := 0; i < 3000; i++ {
		switch k := rng.Intn(20); {
		case k < 8 || len(live) == 0:
			a := newAddr()
			live = append(live, a)
			add(event.Event{Kind: event.Alloc, Op: ops[rng.Intn(len(ops))], Addr: a, Size: uint64(rng.Intn(5000))})
		case k < 13:
			a := take()
			freed = append(freed, a)
			add(event.Event{Kind: event.Free, Op: event.OpFree, Addr: a})
		case k < 15:
			old := take()
			a := newAddr()
			freed = append(freed, old)
			live = append(live, a)
			add(event.Event{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: old, Addr: a, Size: uint64(rng.Intn(9000))})
		case k == 15:
			a := newAddr()
			live = append(live, a)
			add(event.Event{Kind: event.Realloc, Op: event.OpRealloc, Addr: a, Size: 24})
		case k == 16:
			old := take()
			freed = append(freed, old)
			add(event.Event{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: old})
		case k == 17:
			// Failed realloc: the block stays live.
			add(event.Event{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: live[rng.Intn(len(live))], Size: 1 << 50})
		case k == 18:
			add(event.Event{Kind: event.Mmap, Op: event.OpMmap, Addr: 0x7e0000000000, Size: 40960, Flags: event.MapAnonymous})
			add(event.Event{Kind: event.Munmap, Op: event.OpMunmap, Addr: 0x7e0000000000, Size: 40960})
		default:
			add(event.Event{Kind: event.Free, Op: event.OpFree})
		}
	}
	if freeAll {
		for len(live) > 0 {
			add(event.Event{Kind: event.Free, Op: event.OpDelete, Addr: take()})
		}
	}
	return s
}

func (s *synthetic) feed(h event.Handler) {
	h.Header(&event.Header{Version: 1, Pid: 1234})
	h.Module(&s.exe)
	h.Module(&s.shim)
	h.Module(&s.libc)
	for id := uint64(1); id <= uint64(len(s.stacks)); id++ {
		h.Stack(id, s.stacks[id])
	}
	for i := range s.events {
		h.Event(&s.events[i])
	}
}

// TestWriterScript checks the writer against glibc's mtrace script: the
// script must find exactly the blocks the stream leaves live, never a
// release of an unknown block, and name callers in the program through
// addr2line.
func TestWriterScript(t *testing.T) {
	needGlibcTools(t)
	bin := testutil.Program(t, "mtrace_leaks.c")
	for _, freeAll := range []bool{false, true} {
		t.Run(fmt.Sprintf("freeAll=%v", freeAll), func(t *testing.T) {
			s := newSynthetic(t, bin, freeAll)
			want := newReplay()
			s.feed(want)
			if want.unknown != 0 {
				t.Fatalf("the synthetic stream releases %d unknown blocks", want.unknown)
			}
			if freeAll != (len(want.live) == 0) {
				t.Fatalf("synthetic stream leaves %d blocks live", len(want.live))
			}

			path := filepath.Join(t.TempDir(), "out.mtrace")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			w := NewWriter(f)
			s.feed(w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			var mmaps uint64
			for _, e := range s.events {
				if e.Kind == event.Mmap || e.Kind == event.Munmap {
					mmaps++
				}
			}
			if w.Skipped() != mmaps {
				t.Errorf("writer skipped %d events, want the %d mmap-family ones", w.Skipped(), mmaps)
			}

			res := runScript(t, bin, path)
			if res.neverOwn != 0 {
				t.Errorf("script found %d releases of unknown blocks:\n%s", res.neverOwn, res.out)
			}
			if freeAll {
				if !res.noLeaks {
					t.Errorf("fully freed stream: script did not say \"No memory leaks.\":\n%s", res.out)
				}
				return
			}
			sameBlocks(t, "script vs stream", res.leaks, want.live)

			// The stream read back through the decoder leaves the
			// same blocks.
			back := newReplay()
			rf, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer rf.Close()
			if err := Parse(rf, path, back); err != nil {
				t.Fatal(err)
			}
			sameBlocks(t, "decoded writer output vs stream", back.live, want.live)

			// Blocks from stack 1 are named by source line, the
			// shim's frames skipped; from stack 2 by libc offset.
			named := map[string]int{}
			for a := range want.live {
				named[fmt.Sprint(want.stack[a])+" "+res.where[a]]++
			}
			var srcLine, noCaller bool
			for k := range named {
				if strings.HasPrefix(k, "1 ") && strings.Contains(k, "mtrace_leaks.c:") {
					srcLine = true
				}
				if k == "0 " {
					noCaller = true
				}
				if strings.HasPrefix(k, "1 ") && !strings.Contains(k, "mtrace_leaks.c:") {
					t.Errorf("stack 1 leak named %q", k)
				}
			}
			if !srcLine || !noCaller {
				t.Errorf("callers named by the script: %v", named)
			}
		})
	}
}
