package shimtest

import (
	"testing"
	"time"

	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/internal/testutil"
)

// allocTimes keeps the times of a trace's allocations of one size made
// directly by code in module mod.
type allocTimes struct {
	*replay.Replay
	mod   string
	size  uint64
	times []uint64
}

// EventBatch and Recs override the embedded Replay's, so that every event
// goes through Event (as opCounter's).
func (a *allocTimes) EventBatch(evs []event.Event) {
	for i := range evs {
		a.Event(&evs[i])
	}
}

func (a *allocTimes) Recs(tid uint32, recs []event.Rec, evs []event.Event) {
	a.EventBatch(event.AppendEvents(nil, tid, recs, evs))
}

func (a *allocTimes) Event(e *event.Event) {
	a.Replay.Event(e)
	if e.Kind == event.Alloc && e.Size == a.size && fromModule(a.Replay, e.Stack, a.mod) {
		a.times = append(a.times, e.Time)
	}
}

// Event times are made of the coarse clock and a logical count (record.c,
// "the clock"): they must still follow real time, in ns.
func TestEventTimesFollowTheClock(t *testing.T) {
	bin := testutil.Program(t, "grow_then_free.c")
	// Without the live table (LEAK_SCAN=0) events read the precise clock.
	for _, env := range []string{"LEAK_SCAN=1", "LEAK_SCAN=0"} {
		t.Run(env, func(t *testing.T) { checkEventTimes(t, bin, env) })
	}
}

func checkEventTimes(t *testing.T, bin, env string) {
	const count, interval = 12, 30 * time.Millisecond
	began := time.Now()
	r := run(t, true, t.TempDir(), []string{env}, "", bin, "12", "30000")
	wall := time.Since(began)
	if r.status != 0 || len(r.traces) != 1 {
		t.Fatalf("exit %d, traces %v: %s", r.status, r.traces, r.stderr)
	}
	at := &allocTimes{Replay: replay.New(), mod: "grow_then_free", size: 4096}
	if _, err := traceformatDecodeFile(r.traces[0], at); err != nil {
		t.Fatal(err)
	}
	if len(at.times) != count {
		t.Fatalf("%d allocations of 4096 bytes in the trace, want %d", len(at.times), count)
	}
	// Block i is made no earlier than i intervals after block 0 (the
	// program sleeps to deadlines); the coarse clock may lag the true
	// time by a tick or two (4 ms ticks here; a lag of 7 ms was seen).
	const slack = 20 * time.Millisecond
	for i := 1; i < count; i++ {
		if at.times[i] < at.times[i-1] {
			t.Fatalf("block %d at %d ns, before block %d at %d ns", i, at.times[i], i-1, at.times[i-1])
		}
		since := time.Duration(at.times[i] - at.times[0])
		if want := time.Duration(i)*interval - slack; since < want {
			t.Errorf("block %d %v after block 0: want at least %v", i, since, want)
		}
	}
	span := time.Duration(at.times[count-1] - at.times[0])
	if span > wall+slack {
		t.Errorf("blocks span %v in the trace, but the whole run took %v", span, wall)
	}
}
