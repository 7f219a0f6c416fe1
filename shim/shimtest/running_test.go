package shimtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/report"
	"libleak/internal/testutil"
)

// start runs grow_heap (8 KiB every 50 ms, never freed) under the shim.
func startGrowHeap(t *testing.T, env ...string) (*exec.Cmd, string) {
	t.Helper()
	bin := testutil.Program(t, "grow_heap.c")
	dir := t.TempDir()
	cmd := exec.Command(bin, "20")
	cmd.Env = append(os.Environ(), append(env, "LD_PRELOAD="+testutil.Shim(t), "LEAK_OUT="+dir)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil { // "ready PID"
		t.Fatal(err)
	}
	return cmd, dir
}

// growBlocks counts grow_heap's own 8 KiB blocks in a trace.
func growBlocks(t *testing.T, in *analyze.Input) (n int) {
	heap, _ := in.Replay.Live()
	for _, b := range heap {
		if b.Size == 8192 && fromModule(in.Replay, b.Stack, "grow_heap") {
			n++
		}
	}
	return n
}

func TestSigkillLosesAtMostOneInterval(t *testing.T) {
	cmd, dir := startGrowHeap(t)
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	traces, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	if len(traces) != 1 {
		t.Fatalf("traces: %v", traces)
	}
	in := load(t, traces[0])
	if !in.Stats.Truncated || in.Stats.Ended {
		t.Errorf("a killed process's trace must say it was cut short: %+v", in.Stats)
	}
	// 1.5 s at one block per 50 ms is about 30 blocks; the last 100 ms
	// (2 blocks) may be lost, start-up takes a little, and a loaded
	// machine stretches the sleeps.
	if n := growBlocks(t, in); n < 20 || n > 31 {
		t.Errorf("%d blocks in the trace of a process killed after 1.5 s, want 20..31", n)
	}
}

func TestSnapshotOfRunningProcess(t *testing.T) {
	cmd, dir := startGrowHeap(t, "LEAK_SCAN_SIGNAL=USR2", "LEAK_CONTENT=16")
	time.Sleep(600 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGUSR2)
	traces, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	if len(traces) != 1 {
		t.Fatalf("traces: %v", traces)
	}
	// The scan reaches the file with the next flush, within 100 ms; a
	// loaded machine may take longer.
	var in *analyze.Input
	for wait := time.Now(); ; {
		time.Sleep(100 * time.Millisecond)
		in = load(t, traces[0])
		if len(in.Replay.Scans) > 0 || time.Since(wait) > 10*time.Second {
			break
		}
	}
	if len(in.Replay.Scans) != 1 {
		t.Fatalf("want one scan in the trace of the running process, got %d", len(in.Replay.Scans))
	}
	// grow_heap drops a block's pointer when it makes the next one: all
	// it made before the scan are definitely lost, but the newest, still in
	// its local variable (reachable). Their first bytes are 0x5a.
	scan := in.Replay.Scans[0]
	heap, _ := in.Replay.Live()
	before, definite := 0, 0
	for _, b := range heap {
		if b.Size != 8192 || b.Time > scan.Time {
			continue
		}
		before++
		for _, v := range scan.Verdicts {
			if v.Addr == b.Addr && v.Kind == event.VerdictDefinite {
				definite++
				if !bytes.Equal(v.Content, bytes.Repeat([]byte{0x5a}, 16)) {
					t.Errorf("content of 0x%x: %x", b.Addr, v.Content)
				}
			}
		}
	}
	if before < 8 || definite < before-1 {
		t.Errorf("%d blocks made before the scan, %d definitely lost: want all but the newest (≥ 8)", before, definite)
	}
	// The report takes its kinds from the scan; later blocks are unfreed.
	rep, err := analyze.Run(traces, analyze.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Summary[report.KindDefinite].Blocks != uint64(definite) {
		t.Errorf("summary %+v, want %d definite blocks", rep.Summary, definite)
	}
}

func TestScanInterval(t *testing.T) {
	_, dir := startGrowHeap(t, "LEAK_SCAN_INTERVAL=0.3")
	time.Sleep(1300 * time.Millisecond)
	traces, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	in := load(t, traces[0])
	n := len(in.Replay.Scans)
	if n < 2 || n > 5 {
		t.Fatalf("want 2..5 periodic scans in 1.3 s at 0.3 s, got %d", n)
	}
	for i := 1; i < n; i++ {
		if in.Replay.Scans[i].Time <= in.Replay.Scans[i-1].Time {
			t.Errorf("scan %d at %d, not after %d", i, in.Replay.Scans[i].Time, in.Replay.Scans[i-1].Time)
		}
	}
}

// A program that blocks SIGTERM everywhere and sigwaits for it must get
// it: the tracer's own threads must not take the signal (whose default
// action would end the process).
func TestSigwaitGetsTheSignal(t *testing.T) {
	bin := testutil.Program(t, "sigwait.c")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+testutil.Shim(t), "LEAK_OUT="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if line, _ := r.ReadString('\n'); line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("first line %q", line)
	}
	time.Sleep(300 * time.Millisecond) // the tracer's threads are all up
	cmd.Process.Signal(syscall.SIGTERM)
	line, _ := r.ReadString('\n')
	err = cmd.Wait()
	if line != "got=15\n" || err != nil {
		t.Errorf("after SIGTERM: printed %q, wait: %v (want got=15 and exit 0)", line, err)
	}
}
