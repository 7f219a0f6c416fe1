package shimtest

import (
	"fmt"
	"strings"
	"testing"

	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/internal/testutil"
)

// A signal handler that allocates interrupts the tracer while it holds a
// live-table lock or writes a record: its calls must pass straight to the
// allocator and be counted as dropped, not wait on that lock forever.
// libunwind allocates while it walks: a handler's call must still be told
// from its own and counted.
func TestSignalHandlerAllocates(t *testing.T) {
	for _, unwinder := range []string{"cfi", "libunwind"} {
		t.Run(unwinder, func(t *testing.T) { signalHandlerAllocates(t, unwinder) })
	}
}

func signalHandlerAllocates(t *testing.T, unwinder string) {
	bin := testutil.Program(t, "signal_alloc.c")
	const iters = 300000
	dir := t.TempDir()
	env := []string{"LEAK_UNWIND=" + unwinder}
	native := run(t, false, dir, env, "", bin, fmt.Sprint(iters))
	traced := run(t, true, dir, env, "", bin, fmt.Sprint(iters))
	if native.status != 0 || traced.status != native.status || traced.stdout != native.stdout {
		t.Fatalf("natively exit %d %q, traced exit %d %q (stderr %q)", native.status, native.stdout, traced.status, traced.stdout, traced.stderr)
	}
	var handlerRuns uint64
	if _, err := fmt.Sscanf(traced.stderr, "handler_allocs=%d", &handlerRuns); err != nil {
		t.Fatalf("stderr %q: %v", traced.stderr, err)
	}
	if len(traced.traces) != 1 {
		t.Fatalf("want 1 trace, got %v", traced.traces)
	}
	var loop, handler uint64
	h := &replayEach{Replay: replay.New()}
	h.fn = func(e *event.Event) {
		if e.Kind != event.Alloc || !fromModule(h.Replay, e.Stack, "signal_alloc") {
			return
		}
		switch {
		case e.Size == 1000:
			handler++
		case e.Size >= 16 && e.Size < 216:
			loop++
		}
	}
	st, err := traceformatDecodeFile(traced.traces[0], h)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Replay.Hdr.Unwinder; got != unwinder {
		if unwinder == "libunwind" && got == "fp" {
			t.Skip("libunwind.so.8 is not installed (apt-get install libunwind8)")
		}
		t.Fatalf("the trace says unwinder %q, want %q", got, unwinder)
	}
	if st.Truncated {
		t.Errorf("trace truncated")
	}
	// The loop's own calls are never the interrupting ones: all recorded.
	if loop != iters {
		t.Errorf("%d loop allocations recorded, want %d", loop, iters)
	}
	// A handler run inside the tracer's bookkeeping loses its malloc and
	// its free together, counted; one outside it is recorded whole.
	if st.Dropped == 0 || st.Dropped%2 != 0 {
		t.Errorf("%d events dropped, want an even number above 0 (%d handler runs)", st.Dropped, handlerRuns)
	}
	if handler+st.Dropped/2 != handlerRuns {
		t.Errorf("%d handler allocations recorded and %d dropped, but the handler ran %d times", handler, st.Dropped/2, handlerRuns)
	}
}

// The Go runtime's threads never block SIGCHLD: a SIGCHLD the program's
// threads all block must still stay pending for the program, not run its
// handler on one of ours and leave its sigsuspend waiting.
func TestSigchldStaysWithTheProgram(t *testing.T) {
	printsBoth(t, "sigchld_wait.c", "suspend=ok siginfo=ok sigwait=ok\n")
}

// printsBoth runs the test program built from src natively and traced:
// both must print want and exit 0.
func printsBoth(t *testing.T, src, want string) {
	t.Helper()
	r := same(t, t.TempDir(), nil, "", testutil.Program(t, src))
	if r.stdout != want || r.status != 0 {
		t.Errorf("%s: exit %d, stdout %q, want %q", src, r.status, r.stdout, want)
	}
}

// The Go runtime preempts its threads with SIGURG, which programs take for
// out-of-band socket data. A program's SIGURG action is its own: it reads
// back what it set, its handler never runs for the runtime's requests,
// and a SIGURG sent to the process reaches it even when it blocks SIGURG
// and only the runtime's threads do not.
func TestSigurgIsTheProgramsAlone(t *testing.T) {
	t.Parallel()
	printsBoth(t, "sigurg.c", "default=yes own=yes during=0 sigwait=ok raise=1\n")
}

// The program finds every signal's action as it would without the tracer,
// though the Go runtime inside it set its own for five of them: the
// default, or what the program inherited.
func TestSignalActionsAreTheProgramsOwn(t *testing.T) {
	t.Parallel()
	all := strings.Repeat("d", 31)
	printsBoth(t, "sigactions.c", all+"\n")
	// SIGPIPE (13) inherited as ignored.
	want := all[:12] + "i" + all[13:] + "\n"
	bin := testutil.Program(t, "sigactions.c")
	if r := same(t, t.TempDir(), nil, "", "sh", "-c", `trap "" PIPE; exec "$0"`, bin); r.stdout != want {
		t.Errorf("actions with SIGPIPE ignored %q, want %q", r.stdout, want)
	}
}
