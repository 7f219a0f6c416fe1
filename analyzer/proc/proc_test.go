package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"libleak/analyzer/trend"
	"libleak/internal/testutil"
)

func TestParseFixtures(t *testing.T) {
	data, _ := os.ReadFile("testdata/status.txt")
	st, err := ParseStatus(data)
	want := Status{Name: "steady", State: "S (sleeping)", Pid: 790, PPid: 787, Threads: 1, VmPeak: 2608 << 10,
		VmSize: 2608 << 10, VmHWM: 1720 << 10, VmRSS: 1720 << 10, RssAnon: 356 << 10, RssFile: 1364 << 10,
		VmData: 356 << 10, HasMM: true}
	if err != nil || st != want {
		t.Errorf("status:\n got %+v\nwant %+v (%v)", st, want, err)
	}
	if st.VmRSS != st.RssAnon+st.RssFile+st.RssShmem {
		t.Errorf("VmRSS is RssAnon+RssFile+RssShmem")
	}

	data, _ = os.ReadFile("testdata/smaps.txt")
	maps, err := ParseSmaps(data)
	if err != nil || len(maps) != 24 {
		t.Fatalf("smaps: %d mappings, %v", len(maps), err)
	}
	m0 := Mapping{Start: 0x55a7ca4ea000, End: 0x55a7ca4eb000, Perms: "r--p", Inode: 9981644, Path: "/tmp/steady",
		Size: 4096, Rss: 4096, Pss: 4096, PrivateDirty: 4096}
	if maps[0] != m0 {
		t.Errorf("first mapping:\n got %+v\nwant %+v", maps[0], m0)
	}
	var heap, stack, anon int
	for _, m := range maps {
		switch {
		case m.Path == "[heap]":
			heap++
		case m.Path == "[stack]":
			stack++
		case m.Path == "":
			anon++
		}
	}
	if heap != 1 || stack != 1 || anon != 3 {
		t.Errorf("heap %d stack %d anon %d", heap, stack, anon)
	}

	data, _ = os.ReadFile("testdata/smaps_rollup.txt")
	roll, err := ParseSmaps(data)
	if err != nil || len(roll) != 1 || roll[0].Path != "[rollup]" {
		t.Fatalf("rollup: %+v %v", roll, err)
	}
	tot := Totals(maps)
	if tot.Rss != roll[0].Rss || tot.Anonymous != roll[0].Anonymous || tot.USS() != roll[0].USS() || tot.Rss != st.VmRSS {
		t.Errorf("smaps totals %+v differ from the rollup %+v", tot, roll[0])
	}

	data, _ = os.ReadFile("testdata/stat.txt")
	if start, ok := parseStartTime(data); !ok || start != 123289 {
		t.Errorf("start time %d %v", start, ok)
	}
	if _, ok := parseStartTime([]byte("12 (a) b) S 1")); ok {
		t.Errorf("short stat accepted")
	}
	if _, err := ParseSmaps([]byte("garbage line\n")); err == nil || err.Error() != `line 1: not a smaps line: "garbage line"` {
		t.Errorf("garbage: %v", err)
	}
	if _, err := ParseStatus([]byte("nothing here\n")); err == nil {
		t.Errorf("garbage status accepted")
	}
}

const (
	kib  = 1024
	base = 0x7f0000100000
)

// synthRun is a process whose anonymous region grows down by 40 KiB and
// whose heap grows up by 16 KiB every 100 ms sample, with a region that
// appears once halfway and mappings that do not move.
func synthRun() *ProcRun {
	run := &ProcRun{Pid: 4242, Cmdline: []string{"/usr/bin/demo", "--serve", "it's"}}
	for i := 0; i < 12; i++ {
		heapAnon := uint64(132*kib + 16*kib*i)
		heapSize := (heapAnon + 132*kib - 1) / (132 * kib) * (132 * kib)
		regionAnon := uint64(40 * kib * (i + 1))
		maps := []Mapping{
			{Start: 0x555500000000, End: 0x555500004000, Perms: "r-xp", Path: "/usr/bin/demo", Size: 16 * kib, Rss: 16 * kib},
			{Start: 0x555500010000, End: 0x555500010000 + heapSize, Perms: "rw-p", Path: "[heap]", Size: heapSize,
				Rss: heapAnon, Anonymous: heapAnon, PrivateDirty: heapAnon},
			{Start: base - regionAnon, End: base, Perms: "rw-p", Size: regionAnon, Rss: regionAnon, Anonymous: regionAnon,
				PrivateDirty: regionAnon},
			{Start: base, End: base + 0x200000, Perms: "r--p", Path: "/usr/lib/libc.so.6", Size: 2048 * kib,
				Rss: uint64(1024*kib + 64*kib*i), Pss: 200 * kib},
			{Start: 0x7ffd00000000, End: 0x7ffd00021000, Perms: "rw-p", Path: "[stack]", Size: 132 * kib, Rss: 12 * kib,
				Anonymous: 12 * kib, PrivateDirty: 12 * kib},
		}
		if i >= 6 {
			maps = append(maps, Mapping{Start: 0x7f0000800000, End: 0x7f0000840000, Perms: "rw-p", Size: 256 * kib,
				Rss: 256 * kib, Anonymous: 256 * kib, PrivateDirty: 256 * kib})
		}
		tot := Totals(maps)
		run.Samples = append(run.Samples, ProcSample{T: float64(i) / 10, Mappings: maps, Status: Status{
			Name: "demo", HasMM: true, VmSize: tot.Size, VmRSS: tot.Rss, RssAnon: tot.Anonymous, RssFile: tot.Rss - tot.Anonymous,
		}})
	}
	return run
}

func TestLineages(t *testing.T) {
	run := synthRun()
	maps := make([][]Mapping, len(run.Samples))
	for i, s := range run.Samples {
		maps[i] = s.Mappings
	}
	ls := trackLineages(maps)
	if len(ls) != 6 {
		t.Fatalf("%d lineages, want 6 (the region growing down is one)", len(ls))
	}
	for _, l := range ls {
		if l.path == "" && l.born == 0 {
			if l.start != base-40*kib*12 || l.anon[0] != 40*kib || l.anon[11] != 480*kib {
				t.Errorf("growing region: start %x, anon %v", l.start, l.anon)
			}
		}
		if l.path == "" && l.born == 6 && (l.anon[5] != 0 || l.anon[6] != 256*kib) {
			t.Errorf("new region: %v", l.anon)
		}
	}

	// An arena that grows by mprotect: the rw part grows into the ---
	// part, which shrinks; a mapping unmapped and one mapped anew.
	a := [][]Mapping{
		{{Start: 0x1000, End: 0x3000, Perms: "rw-p"}, {Start: 0x3000, End: 0x9000, Perms: "---p"}, {Start: 0x20000, End: 0x21000, Perms: "rw-p"}},
		{{Start: 0x1000, End: 0x5000, Perms: "rw-p"}, {Start: 0x5000, End: 0x9000, Perms: "---p"}, {Start: 0x40000, End: 0x41000, Perms: "rw-p"}},
	}
	ls = trackLineages(a)
	if len(ls) != 4 {
		t.Fatalf("arena: %d lineages, want 4", len(ls))
	}
	if ls[0].start != 0x1000 || ls[0].end != 0x5000 || !ls[0].alive || ls[2].alive || ls[3].born != 1 {
		t.Errorf("arena: %+v %+v %+v %+v", ls[0], ls[1], ls[2], ls[3])
	}
}

func TestProcessReport(t *testing.T) {
	rep := AnalyzeProcess(synthRun(), Options{MinGrowth: DefaultMinGrowth, Top: 10})
	if !rep.Flagged || rep.Interval != 0.1 || rep.Seconds != 1.1 || rep.Samples != 12 {
		t.Fatalf("flagged %v interval %v seconds %v", rep.Flagged, rep.Interval, rep.Seconds)
	}
	if rep.Metrics[0].Name != "anon+swap" || !rep.Metrics[0].Flagged {
		t.Errorf("lead metric %+v", rep.Metrics[0])
	}
	type row struct {
		name    string
		flagged bool
		verdict trend.Verdict
		rate    float64
		per     float64
	}
	var got []row
	for _, m := range rep.Mappings {
		got = append(got, row{m.Name, m.Flagged, m.Verdict, m.BytesPerSecond, m.PerInterval})
	}
	want := []row{
		{"[anon]", true, trend.Growing, 409600, 40960},
		{"[heap]", true, trend.Growing, 163840, 16384},
		// A region that appears halfway is a step; Theil–Sen still
		// gives it a slope, which the verdict puts in its place.
		{"[anon]", false, trend.Step, 276707.6, 27670.8},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mappings:\n got %+v\nwant %+v", got, want)
	}
	if rep.Mappings[0].Start != base-480*kib || rep.Mappings[0].End != base || rep.Mappings[0].New || !rep.Mappings[2].New {
		t.Errorf("regions %+v", rep.Mappings)
	}
	if rep.AnonMappings != [2]int{1, 2} {
		t.Errorf("anon mappings %v", rep.AnonMappings)
	}
	wantFinding := "anonymous region 7f0000088000-7f0000100000 (rw-p) grows 40.0 KiB every 100 ms (+400.0 KiB/s, confidence 1.000): mmap'd memory, large malloc blocks, or a thread's malloc arena"
	if len(rep.Findings) != 2 || rep.Findings[0] != wantFinding {
		t.Errorf("findings %q", rep.Findings)
	}
	if len(rep.Next) != 3 || rep.Next[1] != `leakanalyze run -- /usr/bin/demo --serve 'it'\''s'` {
		t.Errorf("next %q", rep.Next)
	}
	var b bytes.Buffer
	WriteProcessText(&b, rep)
	testutil.Golden(t, "process.golden", b.Bytes())
	b.Reset()
	WriteJSON(&b, rep)
	testutil.Golden(t, "process.json.golden", b.Bytes())

	// Top 1 keeps the fastest.
	rep = AnalyzeProcess(synthRun(), Options{MinGrowth: DefaultMinGrowth, Top: 1})
	if len(rep.Mappings) != 1 || rep.More != 2 {
		t.Errorf("top 1: %d shown, %d more", len(rep.Mappings), rep.More)
	}
	// A floor above the growth flags nothing.
	rep = AnalyzeProcess(synthRun(), Options{MinGrowth: 8 << 20})
	if rep.Flagged {
		t.Errorf("flagged under an 8 MiB floor")
	}
}

func TestProcessWithoutSmaps(t *testing.T) {
	run := synthRun()
	for i := range run.Samples {
		run.Samples[i].Mappings = nil
	}
	run.Warnings = []string{"smaps refused"}
	rep := AnalyzeProcess(run, Options{MinGrowth: DefaultMinGrowth})
	if !rep.Flagged || len(rep.Mappings) != 0 || len(rep.Metrics) != 7 || rep.Warnings[0] != "smaps refused" {
		t.Errorf("%+v", rep)
	}
	if len(rep.Findings) != 1 || !strings.HasPrefix(rep.Findings[0], "anonymous memory grows steadily: +") {
		t.Errorf("findings %q", rep.Findings)
	}
}

func synthTop() *TopRun {
	run := &TopRun{procs: map[procKey]*procSeries{}}
	add := func(pid int, name string, from, to int, anon func(i int) float64, rollup bool) {
		p := &procSeries{key: procKey{pid, uint64(pid) * 10}, name: name, rollup: rollup, noRoll: !rollup}
		for i := from; i < to; i++ {
			p.idx = append(p.idx, i)
			p.anon = append(p.anon, anon(i))
			p.rss = append(p.rss, anon(i)+4<<20)
			p.pss = append(p.pss, anon(i)+1<<20)
			p.uss = append(p.uss, anon(i))
		}
		p.present = to == 10
		run.procs[p.key] = p
	}
	add(100, "leaky", 0, 10, func(i int) float64 { return float64(8<<20 + i*64*kib) }, true)
	add(200, "steady", 0, 10, func(i int) float64 { return 32 << 20 }, true)
	add(300, "batch", 0, 6, func(i int) float64 { return float64(1<<20 + i*512*kib) }, false)
	add(400, "jumpy", 0, 10, func(i int) float64 {
		if i < 5 {
			return 2 << 20
		}
		return 6 << 20
	}, true)
	add(500, "late", 4, 10, func(i int) float64 { return 3 << 20 }, true)
	for i := 0; i < 10; i++ {
		run.Times = append(run.Times, float64(i))
		run.Meminfo = append(run.Meminfo, map[string]uint64{
			"MemTotal": 8 << 30, "MemFree": uint64(2<<30 - i*(1<<20)), "Buffers": 64 << 20, "Cached": 1 << 30,
			"MemAvailable": uint64(2900<<20 - i*(1<<20)), "Slab": 200 << 20, "SUnreclaim": uint64(80<<20 + i*32*kib),
			"AnonPages": uint64(500<<20 + i*(2<<20)), "Committed_AS": 3 << 30, "Shmem": 100 << 20, "PageTables": 8 << 20,
		})
	}
	run.finish()
	return run
}

func TestTopReport(t *testing.T) {
	run := synthTop()
	if run.Exited != 1 || run.Started != 1 || run.Unreadable != 1 {
		t.Errorf("exited %d started %d unreadable %d", run.Exited, run.Started, run.Unreadable)
	}
	rep := AnalyzeTop(run, Options{MinGrowth: DefaultMinGrowth, Top: 10})
	var order []string
	for _, p := range rep.Ranked {
		order = append(order, fmt.Sprintf("%d:%s:%v", p.Pid, p.Verdict, p.Flagged))
	}
	// batch grows fastest, then exits; jumpy is a step; SUnreclaim is a
	// kernel leak; AnonPages grows 18 MiB, the processes watched
	// throughout explain 4.6 MiB of it.
	want := []string{"300:growing:true", "100:growing:true", "400:step:false", "200:flat:false", "500:flat:false"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("ranking %v, want %v", order, want)
	}
	if rep.Flagged != 3 || rep.Processes != 5 {
		t.Errorf("flagged %d processes %d", rep.Flagged, rep.Processes)
	}
	wantFindings := []string{
		"memory is going: MemAvailable falls 1.0 MiB/s (-9.0 MiB over 9.0 s)",
		"process 300 (batch) grows steadily: +512.0 KiB/s, +2.5 MiB over the window",
		"process 100 (leaky) grows steadily: +64.0 KiB/s, +576.0 KiB over the window",
		"AnonPages grows +18.0 MiB but the processes watched throughout account for +4.6 MiB: short-lived processes, or ones we could not read",
		"unreclaimable kernel slab grows steadily: +32.0 KiB/s: a kernel leak candidate",
	}
	if !reflect.DeepEqual(rep.Findings, wantFindings) {
		t.Errorf("findings:\n%s", strings.Join(rep.Findings, "\n"))
	}
	if rep.Ranked[0].PSS != nil || rep.Ranked[1].PSS == nil || *rep.Ranked[1].USS != 8<<20+9*64*kib || !rep.Ranked[0].Exited {
		t.Errorf("pss/uss/exited: %+v %+v", rep.Ranked[0], rep.Ranked[1])
	}
	var b bytes.Buffer
	WriteTopText(&b, rep)
	testutil.Golden(t, "top.golden", b.Bytes())
	b.Reset()
	WriteJSON(&b, rep)
	testutil.Golden(t, "top.json.golden", b.Bytes())
}

// startProgram runs a test program and waits until it says it is ready.
func startProgram(t *testing.T, src string, args ...string) *exec.Cmd {
	t.Helper()
	bin := testutil.Program(t, src)
	cmd := exec.Command(bin, args...)
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
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != fmt.Sprintf("ready %d\n", cmd.Process.Pid) {
		t.Fatalf("%s: %q %v", src, line, err)
	}
	return cmd
}

func sampleProgram(t *testing.T, pid int, d time.Duration) ProcessReport {
	t.Helper()
	run, err := CollectProcess(context.Background(), ProcOptions{Pid: pid, Interval: 100 * time.Millisecond, Duration: d})
	if err != nil {
		t.Fatal(err)
	}
	if run.Exited || len(run.Samples) != SampleCount(100*time.Millisecond, d) {
		t.Fatalf("exited %v, %d samples", run.Exited, len(run.Samples))
	}
	return AnalyzeProcess(run, Options{MinGrowth: DefaultMinGrowth, Top: 5})
}

func TestLiveGrowMmap(t *testing.T) {
	t.Parallel()
	cmd := startProgram(t, "grow_mmap.c", "30")
	rep := sampleProgram(t, cmd.Process.Pid, 2*time.Second)
	if !rep.Flagged || len(rep.Mappings) == 0 {
		t.Fatalf("not flagged: %+v", rep)
	}
	m := rep.Mappings[0]
	// 40 KiB every 100 ms; allow for a loaded machine.
	if m.Path != "" || !m.Flagged || m.Verdict != trend.Growing || m.BytesPerSecond < 200*kib || m.BytesPerSecond > 480*kib {
		t.Errorf("top mapping %+v", m)
	}
	if m.LastSize < m.FirstSize+600*kib {
		t.Errorf("the region did not grow in size: %d -> %d", m.FirstSize, m.LastSize)
	}
	for _, other := range rep.Mappings[1:] {
		if other.Flagged {
			t.Errorf("another mapping flagged: %+v", other)
		}
	}
	if !strings.Contains(rep.Next[1], "grow_mmap 30") {
		t.Errorf("next step %q", rep.Next)
	}
}

func TestLiveGrowHeap(t *testing.T) {
	t.Parallel()
	cmd := startProgram(t, "grow_heap.c", "30")
	rep := sampleProgram(t, cmd.Process.Pid, 2*time.Second)
	if !rep.Flagged || len(rep.Mappings) == 0 {
		t.Fatalf("not flagged: %+v", rep)
	}
	m := rep.Mappings[0]
	// 8 KiB every 50 ms.
	if m.Path != "[heap]" || !m.Flagged || m.Verdict != trend.Growing || m.BytesPerSecond < 80*kib || m.BytesPerSecond > 200*kib {
		t.Errorf("top mapping %+v", m)
	}
	if !strings.HasPrefix(rep.Findings[0], "the heap ") {
		t.Errorf("findings %q", rep.Findings)
	}
}

func TestLiveSteady(t *testing.T) {
	t.Parallel()
	cmd := startProgram(t, "steady.c", "30")
	rep := sampleProgram(t, cmd.Process.Pid, 2*time.Second)
	if rep.Flagged {
		t.Fatalf("a steady process flagged: %+v", rep)
	}
	for _, m := range rep.Metrics {
		// PSS divides shared pages among the processes mapping them, so it
		// moves when other processes start or end: not this one's growth.
		if m.Verdict == trend.Growing && m.Name != "pss" {
			t.Errorf("%s grows: %+v", m.Name, m)
		}
	}
	if len(rep.Next) != 1 || !strings.HasPrefix(rep.Next[0], "no steady growth in 2.0 s") {
		t.Errorf("next %q", rep.Next)
	}
}

func TestLiveExitMidWindow(t *testing.T) {
	t.Parallel()
	cmd := startProgram(t, "grow_heap.c", "0.6")
	go cmd.Wait() // reap it so it does not linger as a zombie
	run, err := CollectProcess(context.Background(), ProcOptions{Pid: cmd.Process.Pid, Interval: 100 * time.Millisecond, Duration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !run.Exited || len(run.Samples) < 3 || len(run.Samples) > 9 {
		t.Fatalf("exited %v after %d samples", run.Exited, len(run.Samples))
	}
	rep := AnalyzeProcess(run, Options{MinGrowth: DefaultMinGrowth})
	if !rep.Exited || !strings.HasPrefix(rep.Warnings[len(rep.Warnings)-1], fmt.Sprintf("process %d exited during the window", run.Pid)) {
		t.Errorf("warnings %q", rep.Warnings)
	}
}

func TestNoSuchProcess(t *testing.T) {
	_, err := CollectProcess(context.Background(), ProcOptions{Pid: 1 << 30, Interval: time.Millisecond})
	if err == nil || err.Error() != "/proc/1073741824: no such process" {
		t.Errorf("%v", err)
	}
	_, err = CollectProcess(context.Background(), ProcOptions{Pid: 2, Interval: time.Millisecond})
	if err == nil || err.Error() != "/proc/2/status: a kernel thread: it has no user memory to watch" {
		t.Errorf("kthreadd: %v", err)
	}
}

func TestLiveTop(t *testing.T) {
	t.Parallel()
	leak := startProgram(t, "grow_heap.c", "30")
	flat := startProgram(t, "steady.c", "30")
	brief := startProgram(t, "steady.c", "0.5")
	go brief.Wait()
	run, err := CollectTop(context.Background(), TopOptions{Interval: 100 * time.Millisecond, Duration: 2 * time.Second, Exclude: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	rep := AnalyzeTop(run, Options{MinGrowth: DefaultMinGrowth})
	found := map[int]ProcTrend{}
	for _, p := range rep.Ranked {
		found[p.Pid] = p
	}
	if p, ok := found[leak.Process.Pid]; !ok || !p.Flagged || p.Name != "grow_heap" || p.Samples != 21 || p.PSS == nil {
		t.Errorf("grow_heap: %+v", p)
	}
	if p, ok := found[flat.Process.Pid]; !ok || p.Flagged {
		t.Errorf("steady: %+v", p)
	}
	if p, ok := found[brief.Process.Pid]; !ok || !p.Exited {
		t.Errorf("short-lived: %+v", p)
	}
	if _, ok := found[os.Getpid()]; ok {
		t.Errorf("the sampler itself is ranked")
	}
	if rep.Exited < 1 || len(rep.System) != len(topFields) || rep.Samples != 21 {
		t.Errorf("exited %d, %d system figures, %d samples", rep.Exited, len(rep.System), rep.Samples)
	}
}

func TestReadWholeGrows(t *testing.T) {
	// smaps of a process with many mappings is larger than the first
	// buffer: the read must still return all of it.
	data, err := readWhole("/proc/self/smaps", 1)
	if err != nil {
		t.Fatal(err)
	}
	maps, err := ParseSmaps(data)
	if err != nil || len(maps) < 10 {
		t.Fatalf("%d mappings, %v", len(maps), err)
	}
	big := filepath.Join(t.TempDir(), "big")
	want := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	os.WriteFile(big, want, 0o644)
	got, err := readWhole(big, 1)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%d bytes of %d, %v", len(got), len(want), err)
	}
	if _, err := readWhole("/proc/1073741824/smaps", 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v", err)
	}
}

func TestShellJoin(t *testing.T) {
	if got := shellJoin([]string{"./a", "x y", "", "k=v"}); got != `./a 'x y' '' k=v` {
		t.Errorf("%s", got)
	}
}
