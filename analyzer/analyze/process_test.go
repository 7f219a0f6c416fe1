package analyze_test

import (
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/analyzer/report"
	"libleak/analyzer/traceformat"
)

const ms = 1_000_000

// process replays a process that starts recording at begin (its module
// map's time), allocates 16 bytes at each of allocs from one stack and
// never frees them, and exits at end.
func process(pid, ppid int, forked bool, startUnix int64, begin uint64, allocs []uint64, end uint64) *analyze.Input {
	r := replay.New()
	r.Header(&event.Header{Pid: pid, Ppid: ppid, Exe: "/bin/app", StartUnix: startUnix, Forked: forked})
	r.Module(&event.Module{Path: "/bin/app", Time: begin, Segments: []event.Segment{{Start: 0x1000, End: 0x2000, Exec: true}}})
	r.Stack(1, []uint64{0x1100})
	for i, t := range allocs {
		r.Event(&event.Event{Kind: event.Alloc, Op: event.OpMalloc, Time: t, Addr: 0x10000 + uint64(i)*32, Size: 16, Stack: 1})
	}
	r.Finish()
	return &analyze.Input{Path: "trace", Replay: r, Stats: traceformat.Stats{Ended: true, EndTime: end}}
}

// spread is n times from a to b, evenly.
func spread(n int, a, b uint64) []uint64 {
	var ts []uint64
	for i := 0; i < n; i++ {
		ts = append(ts, a+(b-a)*uint64(i)/uint64(n-1))
	}
	return ts
}

// A forked child's trace counts time from its parent's start. Its report
// counts from the fork, and it comes after its parent even when pids
// wrapped between them and its pid is the smaller.
func TestForkedChildAfterItsParentAndTimedFromTheFork(t *testing.T) {
	const start = int64(1_800_000_000) * 1e9
	parent := process(32757, 1, false, start, 0, spread(10, 1*ms, 70*ms), 200*ms)
	// Forked at 100 ms; allocates all through its life, 101..149 ms.
	child := process(306, 32757, true, start+3, 100*ms, spread(10, 101*ms, 149*ms), 150*ms)

	rep := &report.Report{Summary: map[string]report.Totals{}}
	analyze.Add(rep, child, analyze.Options{})
	analyze.Add(rep, parent, analyze.Options{})
	analyze.Finish(rep, analyze.Options{})

	if len(rep.Processes) != 2 || rep.Processes[0].Pid != 32757 || rep.Processes[1].Pid != 306 {
		t.Fatalf("processes %+v, want 32757 then 306", rep.Processes)
	}
	p, c := rep.Processes[0], rep.Processes[1]
	if p.StartUnixNs != start || p.DurationNs != 200*ms || p.PeakTimeNs != 70*ms {
		t.Errorf("parent: start %d, duration %d, peak at %d; want %d, %d, %d", p.StartUnixNs, p.DurationNs, p.PeakTimeNs, start, 200*ms, 70*ms)
	}
	if c.StartUnixNs != start+3+100*ms || c.DurationNs != 50*ms || c.PeakTimeNs != 49*ms {
		t.Errorf("child: start %d, duration %d, peak at %d; want %d, %d, %d", c.StartUnixNs, c.DurationNs, c.PeakTimeNs, start+3+100*ms, 50*ms, 49*ms)
	}
	patterns := map[int]string{}
	for _, l := range rep.Leaks {
		if l.Blocks != 10 || l.Bytes != 160 {
			t.Errorf("pid %d: %d bytes in %d blocks, want 160 in 10", l.Pid, l.Bytes, l.Blocks)
		}
		patterns[l.Pid] = l.Pattern
	}
	// Over its own life the child leaked all along; counted from the
	// parent's start, its leaks would fall in the last deciles only.
	if patterns[306] != "frequent" || patterns[32757] != "occasional" {
		t.Errorf("patterns %v, want the child's frequent and the parent's occasional (its first third)", patterns)
	}
}
