package shimtest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/symbolize"
	"libleak/internal/testutil"
)

// One allocation site reached from two callers at the same stack depth:
// the allocating frame repeats exactly, and only the return addresses
// above it differ. Every block must be charged to its own caller, whether
// the walk follows frame pointers' CFI (-O0) or stack-pointer rules
// (-O2 without frame pointers).
func TestSameDepthCallers(t *testing.T) {
	src := filepath.Join(testutil.Root(), "testprogs", "same_depth.c")
	for _, flags := range [][]string{{"-O0", "-fno-omit-frame-pointer"}, {"-O2", "-fomit-frame-pointer"}} {
		t.Run(flags[0], func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "same_depth")
			if out, err := exec.Command("gcc", append([]string{"-g", "-o", bin, src}, flags...)...).CombinedOutput(); err != nil {
				t.Fatalf("gcc: %v\n%s", err, out)
			}
			c, in := traceOne(t, bin)
			sym := symbolize.New(symbolize.Options{})
			got := map[string][2]uint64{} // caller -> blocks, bytes
			p := sym.Process(modules(in))
			heap, _ := in.Replay.Live()
			for _, b := range heap {
				if !fromModule(in.Replay, b.Stack, "same_depth") {
					continue
				}
				fr := p.Stack(in.Replay.Stacks[b.Stack])
				if len(fr) < 3 || fr[0].Function != "site" || fr[2].Function != "main" {
					t.Fatalf("block of %d bytes: frames %+v", b.Size, fr)
				}
				g := got[fr[1].Function]
				got[fr[1].Function] = [2]uint64{g[0] + 1, g[1] + b.Size}
			}
			want := map[string][2]uint64{"via_a": {c["a_blocks"], 16 * c["a_blocks"]}, "via_b": {c["b_blocks"], 48 * c["b_blocks"]}}
			if len(got) != 2 || got["via_a"] != want["via_a"] || got["via_b"] != want["via_b"] {
				t.Errorf("blocks by caller %v, want %v", got, want)
			}
		})
	}
}

func modules(in *analyze.Input) []event.Module {
	mods := make([]event.Module, len(in.Replay.Modules))
	for i, m := range in.Replay.Modules {
		mods[i] = *m
	}
	return mods
}

// A forked child's first walk repeats its parent's last one exactly (same
// site, same frame). The unwinder may remember the stack id the parent's
// trace gave that stack, but the child's trace starts empty: every one of
// the child's blocks must still come with its frames.
func TestForkChildDefinesStacks(t *testing.T) {
	bin := testutil.Program(t, "fork_same_site.c")
	r := run(t, true, t.TempDir(), nil, "", bin)
	if r.status != 0 || len(r.traces) != 2 {
		t.Fatalf("exit %d, traces %v: %s", r.status, r.traces, r.stderr)
	}
	want := map[uint64]map[string]uint64{} // pid -> counters
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		c := counters(t, l)
		want[c["pid"]] = c
	}
	sym := symbolize.New(symbolize.Options{})
	for _, path := range r.traces {
		in := load(t, path)
		w := want[uint64(in.Replay.Hdr.Pid)]
		if w == nil {
			t.Fatalf("%s: pid %d printed nothing", path, in.Replay.Hdr.Pid)
		}
		p := sym.Process(modules(in))
		heap, _ := in.Replay.Live()
		var blocks, bytes uint64
		for _, b := range heap {
			if b.Stack == 0 { // the tracer's own (trace format)
				continue
			}
			pcs := in.Replay.Stacks[b.Stack]
			if len(pcs) == 0 {
				t.Fatalf("pid %d: block of %d bytes has stack %d, never defined", in.Replay.Hdr.Pid, b.Size, b.Stack)
			}
			if !fromModule(in.Replay, b.Stack, "fork_same_site") {
				continue // the C library's
			}
			fr := p.Stack(pcs)
			if len(fr) < 2 || fr[0].Function != "site" || filepath.Base(fr[0].File) != "fork_same_site.c" || fr[1].Function != "main" {
				t.Fatalf("pid %d: block of %d bytes has frames %+v", in.Replay.Hdr.Pid, b.Size, fr)
			}
			blocks++
			bytes += b.Size
		}
		if blocks != w["blocks"] || bytes != w["bytes"] {
			t.Errorf("pid %d: %d blocks, %d bytes from site; program says %d, %d", in.Replay.Hdr.Pid, blocks, bytes, w["blocks"], w["bytes"])
		}
	}
}
