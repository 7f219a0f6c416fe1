package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"libleak/internal/testutil"
)

// kernelRun runs leakanalyze with args as main would.
func kernelRun(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func kernelGolden(t *testing.T, path string, got string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(testutil.Root(), path))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func kmemleakFixture(name string) string {
	return filepath.Join(testutil.Root(), "analyzer", "kmemleak", "testdata", name)
}

func slabFixture(name string) string {
	return filepath.Join(testutil.Root(), "analyzer", "slab", "testdata", name)
}

func TestKmemleakCommand(t *testing.T) {
	code, out, errs := kernelRun("kmemleak", kmemleakFixture("v6.8-crc-hashed.txt"))
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	kernelGolden(t, "analyzer/kmemleak/testdata/v6.8-crc-hashed.golden", out)

	code, out, _ = kernelRun("kmemleak", "--format", "json", "--fail", kmemleakFixture("dmesg.txt"))
	var doc struct {
		Groups []struct {
			Title  string   `json:"title"`
			Count  int      `json:"count"`
			Bytes  uint64   `json:"bytes"`
			Comms  []string `json:"comms"`
			Frames []string `json:"frames"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if code != exitLeaks || len(doc.Groups) != 2 || doc.Groups[0].Title != "memory leak in demo_session_new" ||
		doc.Groups[0].Count != 3 || doc.Groups[0].Bytes != 288 || doc.Groups[0].Comms[0] != "demo-daemon" ||
		doc.Groups[0].Frames[0] != "demo_session_new [demo_net]" {
		t.Errorf("exit %d, %+v", code, doc)
	}

	// Standard input, and --top.
	f, err := os.Open(kmemleakFixture("v5.10-age.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	code, out, _ = kernelRun("kmemleak", "--top", "1", "-")
	os.Stdin = saved
	if code != exitOK || !strings.Contains(out, "#1 memory leak in demo_get_config") || strings.Contains(out, "#2") ||
		!strings.HasSuffix(out, "(1 more group not shown)\n") {
		t.Errorf("stdin --top 1: exit %d\n%s", code, out)
	}

	// No objects: nothing to fail on.
	code, out, _ = kernelRun("kmemleak", "--fail", "/dev/null")
	if code != exitOK || out != "kmemleak: no unreferenced objects reported\n" {
		t.Errorf("empty: exit %d %q", code, out)
	}
}

func TestKmemleakLiveHere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the live read is checked by the unprivileged test below when run as root")
	}
	code, out, errs := kernelRun("kmemleak", "--scan")
	if _, err := os.Stat("/sys/kernel/debug/kmemleak"); err == nil {
		t.Skip("kmemleak is available here; the missing-kmemleak message cannot be checked")
	}
	if code != exitBadInput || out != "" || strings.Count(errs, "\n") != 1 ||
		!strings.HasPrefix(errs, "leakanalyze: /sys/kernel/debug/kmemleak: kmemleak is ") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestSlabCommand(t *testing.T) {
	code, out, errs := kernelRun("slab", slabFixture("recording.txt"))
	if code != exitLeaks || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	kernelGolden(t, "analyzer/slab/testdata/recording.golden", out)

	var plain []string
	for i := 1; i <= 6; i++ {
		plain = append(plain, slabFixture(fmt.Sprintf("plain/slabinfo.%d", i)))
	}
	code, out, _ = kernelRun(append([]string{"slab", "--interval", "10s"}, plain...)...)
	if code != exitLeaks {
		t.Errorf("plain copies: exit %d", code)
	}
	kernelGolden(t, "analyzer/slab/testdata/plain.golden", out)

	// A higher floor flags nothing: exit 0.
	code, out, _ = kernelRun("slab", "--min-growth", "1MiB", "--format", "json", slabFixture("recording.txt"))
	var rep struct {
		Flagged int `json:"flagged"`
		Growing []struct {
			Name    string `json:"name"`
			Verdict string `json:"verdict"`
		} `json:"growing"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || rep.Flagged != 0 ||
		rep.Growing[0].Name != "ext4_inode_cache" || rep.Growing[0].Verdict != "growing" {
		t.Errorf("exit %d, %+v, %v", code, rep, err)
	}
}

func TestSlabLive(t *testing.T) {
	if _, err := os.ReadFile("/proc/slabinfo"); err != nil {
		t.Skipf("/proc/slabinfo is not readable (%v): needs root", err)
	}
	rec := filepath.Join(t.TempDir(), "slab.rec")
	code, out, errs := kernelRun("slab", "--interval", "100ms", "--duration", "500ms", "--record", rec)
	if code == exitBadInput || errs != "" || !strings.HasPrefix(out, "slab: 6 samples over ") {
		t.Fatalf("exit %d, stderr %q\n%s", code, errs, out)
	}
	// The recording replays.
	code, out, errs = kernelRun("slab", rec)
	if code == exitBadInput || errs != "" || !strings.HasPrefix(out, "slab: 6 samples over ") {
		t.Errorf("replay: exit %d, stderr %q\n%s", code, errs, out)
	}
}

func TestKernelBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "binary")
	os.WriteFile(bad, []byte("slabinfo\x00\x01"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"kmemleak", "/no/such/file"}, "leakanalyze: /no/such/file: no such file or directory"},
		{[]string{"kmemleak", kmemleakFixture("bad-header.txt")}, "leakanalyze: " + kmemleakFixture("bad-header.txt") +
			`: line 1: malformed object header "unreferenced object 0xffff88810zz8c000 (size 64):"`},
		{[]string{"kmemleak", "--format", "xml", "x"}, "leakanalyze: --format xml: want text or json"},
		{[]string{"kmemleak", "--scan", kmemleakFixture("dmesg.txt")}, "leakanalyze: --scan: only for the live report, not with FILE"},
		{[]string{"kmemleak", "a", "b"}, "leakanalyze: kmemleak: one FILE at most, got 2"},
		{[]string{"kmemleak", "--depth", "0", "x"}, "leakanalyze: --depth 0: must be at least 1"},
		{[]string{"kmemleak", "--bogus"}, "leakanalyze: kmemleak: unknown flag: --bogus"},
		{[]string{"slab", bad}, "leakanalyze: " + bad + ": line 1: binary data, not a slab sample"},
		{[]string{"slab", slabFixture("slabinfo-v1.1.txt")}, "leakanalyze: " + slabFixture("slabinfo-v1.1.txt") +
			": line 1: slabinfo version 1.1 is not supported (2.0 and 2.1 are)"},
		{[]string{"slab", "--record", "x", slabFixture("recording.txt")}, "leakanalyze: --record: only when sampling live, not with FILE"},
		{[]string{"slab", "--interval", "1ms"}, "leakanalyze: --interval 1ms: must be at least 10ms"},
		{[]string{"slab", "--interval", "1s", "--duration", "1s"}, "leakanalyze: --duration 1s: shorter than 2 × --interval 1s: a trend needs at least 3 samples"},
		{[]string{"slab", "--interval", "soon"}, `leakanalyze: slab: invalid argument "soon" for "--interval" flag: time: invalid duration "soon"`},
		{[]string{"proc"}, "leakanalyze: --pid: required: the process to watch"},
		{[]string{"proc", "--pid", "abc"}, "leakanalyze: --pid abc: not a process id"},
		{[]string{"proc", "--pid", "-4"}, "leakanalyze: --pid -4: not a process id"},
		{[]string{"proc", "--pid", "1", "extra"}, "leakanalyze: extra: unexpected argument: the process is given with --pid"},
		{[]string{"proc", "--pid", "1073741824", "--interval", "100ms", "--duration", "200ms"}, "leakanalyze: /proc/1073741824: no such process"},
		{[]string{"proc", "--pid", "2", "--interval", "100ms", "--duration", "200ms"}, "leakanalyze: /proc/2/status: a kernel thread: it has no user memory to watch"},
		{[]string{"proc", "--pid", "1", "--min-growth", "lots"}, "leakanalyze: --min-growth lots: not a size (try 4096, 16KiB or 1MiB)"},
		{[]string{"proc", "--pid", "1", "--confidence", "1"}, "leakanalyze: --confidence 1: want a value from 0.5 up to, not including, 1"},
		{[]string{"top", "--top", "-1"}, "leakanalyze: --top -1: must not be negative"},
		{[]string{"top", "now"}, "leakanalyze: now: unexpected argument"},
	} {
		code, out, errs := kernelRun(c.args...)
		if code != exitBadInput || out != "" || errs != c.want+"\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q\nwant stderr %q", c.args, code, out, errs, c.want)
		}
	}
}

func TestKernelHelp(t *testing.T) {
	for _, cmd := range []string{"kmemleak", "slab", "proc", "top"} {
		code, out, errs := kernelRun(cmd, "--help")
		if code != exitOK || errs != "" || !strings.HasPrefix(out, "usage: leakanalyze "+cmd) || !strings.Contains(out, "--format") {
			t.Errorf("%s --help: exit %d, stderr %q\n%s", cmd, code, errs, out)
		}
	}
	if got, err := parseByteSize("1.5MiB"); err != nil || got != 1.5*(1<<20) {
		t.Errorf("1.5MiB: %v %v", got, err)
	}
	for in, want := range map[string]float64{"4096": 4096, "16K": 16384, "16kb": 16384, "2 GiB": 2 << 30, "0": 0, "7b": 7} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
}

// kernelStart runs a test program and waits for its "ready" line.
func kernelStart(t *testing.T, src string, args ...string) int {
	t.Helper()
	cmd := exec.Command(testutil.Program(t, src), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("%s: %q %v", src, line, err)
	}
	return cmd.Process.Pid
}

type kernelProcJSON struct {
	Flagged  bool `json:"flagged"`
	Mappings []struct {
		Path           string  `json:"path"`
		Flagged        bool    `json:"flagged"`
		Verdict        string  `json:"verdict"`
		BytesPerSecond float64 `json:"bytes_per_second"`
	} `json:"mappings"`
	Next []string `json:"next"`
}

func kernelProc(t *testing.T, pid int) (int, kernelProcJSON) {
	t.Helper()
	code, out, errs := kernelRun("proc", "--pid", strconv.Itoa(pid), "--interval", "100ms", "--duration", "2s", "--format", "json")
	if errs != "" {
		// Progress goes to a terminal only; errors would be here.
		t.Fatalf("stderr %q", errs)
	}
	var rep kernelProcJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return code, rep
}

func TestProcCommandFindsGrowingMapping(t *testing.T) {
	for _, c := range []struct {
		src      string
		path     string
		min, max float64
	}{
		{"grow_mmap.c", "", 200 << 10, 480 << 10},      // 40 KiB every 100 ms
		{"grow_heap.c", "[heap]", 80 << 10, 200 << 10}, // 8 KiB every 50 ms
	} {
		t.Run(c.src, func(t *testing.T) {
			t.Parallel()
			pid := kernelStart(t, c.src, "30")
			code, rep := kernelProc(t, pid)
			if code != exitLeaks || !rep.Flagged || len(rep.Mappings) == 0 {
				t.Fatalf("exit %d, %+v", code, rep)
			}
			m := rep.Mappings[0]
			if m.Path != c.path || !m.Flagged || m.Verdict != "growing" || m.BytesPerSecond < c.min || m.BytesPerSecond > c.max {
				t.Errorf("growing mapping: %+v", m)
			}
			if len(rep.Next) != 3 || !strings.HasPrefix(rep.Next[1], "leakanalyze run -- ") {
				t.Errorf("next %q", rep.Next)
			}
		})
	}
	t.Run("steady.c", func(t *testing.T) {
		t.Parallel()
		pid := kernelStart(t, "steady.c", "30")
		code, rep := kernelProc(t, pid)
		if code != exitOK || rep.Flagged {
			t.Errorf("exit %d, %+v", code, rep)
		}
		for _, m := range rep.Mappings {
			if m.Flagged {
				t.Errorf("flagged mapping %+v", m)
			}
		}
	})
	t.Run("top", func(t *testing.T) {
		t.Parallel()
		pid := kernelStart(t, "grow_heap.c", "30")
		code, out, errs := kernelRun("top", "--interval", "100ms", "--duration", "2s", "--top", "0", "--format", "json")
		var rep struct {
			Ranked []struct {
				Pid     int  `json:"pid"`
				Flagged bool `json:"flagged"`
			} `json:"processes_ranked"`
			Next []string `json:"next"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitLeaks || errs != "" {
			t.Fatalf("exit %d, stderr %q, %v", code, errs, err)
		}
		found := false
		for _, p := range rep.Ranked {
			if p.Pid == pid {
				found = p.Flagged
			}
			if p.Pid == os.Getpid() {
				t.Errorf("leakanalyze ranked itself")
			}
		}
		if !found {
			t.Errorf("grow_heap %d not flagged: %+v", pid, rep.Ranked)
		}
	})
}

// TestKernelChildProcess is not a test: the unprivileged test below runs
// the test binary as another user with it, to see leakanalyze refused.
func TestKernelChildProcess(t *testing.T) {
	args := os.Getenv("LEAKANALYZE_KERNEL_CHILD")
	if args == "" {
		t.Skip("runs only as the child of TestKernelUnprivileged")
	}
	os.Exit(dispatch(strings.Fields(args), os.Stdout, os.Stderr))
}

func TestKernelUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run leakanalyze as the unprivileged user nobody")
	}
	// The test binary, where nobody may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "leakanalyze-nobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "leakanalyze.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args string) (int, string, string) {
		cmd := exec.Command(bin, "-test.run=^TestKernelChildProcess$")
		cmd.Env = append(os.Environ(), "LEAKANALYZE_KERNEL_CHILD="+args)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}

	code, _, errs := asNobody("slab --interval 100ms --duration 200ms")
	if code != exitBadInput || errs != "leakanalyze: /proc/slabinfo: permission denied: readable by root only, run as root\n" {
		t.Errorf("slab: exit %d, stderr %q", code, errs)
	}
	code, _, errs = asNobody("kmemleak")
	if code != exitBadInput || errs != "leakanalyze: /sys/kernel/debug/kmemleak: reading kmemleak needs root: debugfs is readable by root only\n" {
		t.Errorf("kmemleak: exit %d, stderr %q", code, errs)
	}
	// Another user's process: status only, with the reason.
	code, out, errs := asNobody(fmt.Sprintf("proc --pid %d --interval 100ms --duration 200ms", os.Getpid()))
	want := fmt.Sprintf("warning: /proc/%d/smaps: permission denied: reading the memory maps of process %d needs root or the same user (ptrace access); per-mapping growth not available\n", os.Getpid(), os.Getpid())
	if code != exitOK || errs != "" || !strings.Contains(out, want) {
		t.Errorf("proc: exit %d, stderr %q\n%s", code, errs, out)
	}
}
