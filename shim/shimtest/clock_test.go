package shimtest

import (
	"strconv"
	"testing"
	"time"

	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/internal/testutil"
)

// Event times are made of a ticking clock and a logical count (record.c,
// "the clock"): they must still follow real time, in ns.
func TestEventTimesFollowTheClock(t *testing.T) {
	bin := testutil.Program(t, "grow_then_free.c")
	for _, c := range []struct {
		name, env, warmup string
		count             int
		interval          time.Duration
	}{
		// A thread's first 4096 events also read the precise clock.
		{"first events", "LEAK_SCAN=1", "0", 12, 30 * time.Millisecond},
		// 10,000 events before the timed ones: those read only the
		// ticker's clock.
		{"ticking clock", "LEAK_SCAN=1", "5000", 12, 30 * time.Millisecond},
		// 150 ms between events: the ticker rests in between, and each
		// event reads the coarse clock itself.
		{"ticker at rest", "LEAK_SCAN=1", "5000", 5, 150 * time.Millisecond},
		// Without the live table events read the precise clock.
		{"LEAK_SCAN=0", "LEAK_SCAN=0", "5000", 12, 30 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) { checkEventTimes(t, bin, c.env, c.warmup, c.count, c.interval) })
	}
}

func checkEventTimes(t *testing.T, bin, env, warmup string, count int, interval time.Duration) {
	began := time.Now()
	r := run(t, true, t.TempDir(), []string{env}, "", bin, strconv.Itoa(count), strconv.Itoa(int(interval/time.Microsecond)), warmup)
	wall := time.Since(began)
	if r.status != 0 || len(r.traces) != 1 {
		t.Fatalf("exit %d, traces %v: %s", r.status, r.traces, r.stderr)
	}
	// The times of grow_then_free's own 4 KiB blocks.
	var times []uint64
	h := &replayEach{Replay: replay.New()}
	h.fn = func(e *event.Event) {
		if e.Kind == event.Alloc && e.Size == 4096 && fromModule(h.Replay, e.Stack, "grow_then_free") {
			times = append(times, e.Time)
		}
	}
	if _, err := traceformatDecodeFile(r.traces[0], h); err != nil {
		t.Fatal(err)
	}
	if len(times) != count {
		t.Fatalf("%d allocations of 4096 bytes in the trace, want %d", len(times), count)
	}
	// Block i is made no earlier than i intervals after block 0 (the
	// program sleeps to deadlines); the coarse clock may lag the true
	// time by a tick or two (4 ms ticks here; a lag of 7 ms was seen),
	// the ticker's by a late wake-up.
	const slack = 20 * time.Millisecond
	for i := 1; i < count; i++ {
		if times[i] < times[i-1] {
			t.Fatalf("block %d at %d ns, before block %d at %d ns", i, times[i], i-1, times[i-1])
		}
		since := time.Duration(times[i] - times[0])
		if want := time.Duration(i)*interval - slack; since < want {
			t.Errorf("block %d %v after block 0: want at least %v", i, since, want)
		}
	}
	span := time.Duration(times[count-1] - times[0])
	if span > wall+slack {
		t.Errorf("blocks span %v in the trace, but the whole run took %v", span, wall)
	}
}
