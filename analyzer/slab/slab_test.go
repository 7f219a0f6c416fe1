package slab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"libleak/internal/testutil"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"libleak/analyzer/trend"
)

func readFiles(t *testing.T, interval time.Duration, names ...string) []Sample {
	t.Helper()
	var all []Sample
	for _, n := range names {
		f, err := os.Open(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ReadSamples(f, interval)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		all = append(all, s...)
	}
	if err := SetTimes(all, interval); err != nil {
		t.Fatal(err)
	}
	return all
}

func byName(rep Report) map[string]CacheTrend {
	m := map[string]CacheTrend{}
	for _, c := range rep.Growing {
		m[c.Name] = c
	}
	return m
}

func TestRecordingSeries(t *testing.T) {
	samples := readFiles(t, time.Second, "recording.txt")
	if len(samples) != 12 {
		t.Fatalf("%d samples, want 12", len(samples))
	}
	if got := samples[11].T; got < 55 || got > 55.0001 {
		t.Errorf("last sample at %v s, want 55 s after the first", got)
	}
	s := samples[3]
	if len(s.Caches) != 7 || !reflect.DeepEqual(s.Reclaimable, map[string]bool{"dentry": true, "ext4_inode_cache": true}) {
		t.Errorf("sample 3: %d caches, reclaimable %v", len(s.Caches), s.Reclaimable)
	}
	want := Cache{Name: "kmalloc-128", ActiveObjs: 2048 + 96, NumObjs: 2048 + 96, ObjSize: 128, ObjPerSlab: 32,
		PagesPerSlab: 1, ActiveSlabs: 67, NumSlabs: 67}
	if s.Caches[0] != want {
		t.Errorf("cache: %+v, want %+v", s.Caches[0], want)
	}
	if s.Meminfo["MemTotal"] != 24684092*1024 || s.Meminfo["HugePages_Total"] != 0 {
		t.Errorf("meminfo: MemTotal %d", s.Meminfo["MemTotal"])
	}

	rep := Analyze(samples, Options{MinGrowth: DefaultMinGrowth})
	got := byName(rep)
	for name, v := range map[string]trend.Verdict{
		"kmalloc-128":      trend.Growing,
		"dentry":           trend.Breathing,
		"ext4_inode_cache": trend.Growing,
		"kmalloc-1k":       trend.Step,
		"kmalloc-64":       trend.Levelled,
	} {
		if got[name].Verdict != v {
			t.Errorf("%s: verdict %q, want %q", name, got[name].Verdict, v)
		}
	}
	if _, ok := got["vm_area_struct"]; ok {
		t.Errorf("a flat cache is listed as growing")
	}
	if !got["kmalloc-128"].Flagged || got["ext4_inode_cache"].Flagged || !got["ext4_inode_cache"].Reclaimable ||
		got["ext4_inode_cache"].ReclaimableFrom != "sysfs" {
		t.Errorf("flags: %+v / %+v", got["kmalloc-128"], got["ext4_inode_cache"])
	}
	if rep.Flagged != 1 || rep.Growing[0].Name != "kmalloc-128" {
		t.Errorf("flagged %d, first %s", rep.Flagged, rep.Growing[0].Name)
	}
	// One slab of 32 128-byte objects every 5 s.
	if r := got["kmalloc-128"].BytesPerSecond; r < 800 || r > 840 {
		t.Errorf("kmalloc-128 rate %v B/s, want about 819", r)
	}
	sys := map[string]Series{}
	for _, s := range rep.System {
		sys[s.Name] = s
	}
	// The 640 KiB kmalloc-1k jump dominates SUnreclaim: a step, not a trend.
	if sys["SUnreclaim"].Verdict != trend.Step || sys["SUnreclaim"].Flagged || len(rep.System) != 3 {
		t.Errorf("system: %+v", rep.System)
	}

	var b bytes.Buffer
	WriteText(&b, rep)
	testutil.Golden(t, "recording.golden", b.Bytes())
	b.Reset()
	WriteJSON(&b, rep)
	testutil.Golden(t, "recording.json.golden", b.Bytes())
}

func TestPlainCopies(t *testing.T) {
	names := []string{"plain/slabinfo.1", "plain/slabinfo.2", "plain/slabinfo.3", "plain/slabinfo.4",
		"plain/slabinfo.5", "plain/slabinfo.6"}
	samples := readFiles(t, 10*time.Second, names...)
	if len(samples) != 6 || samples[5].T != 50 || samples[0].Meminfo != nil {
		t.Fatalf("%d samples, last at %v", len(samples), samples[len(samples)-1].T)
	}
	rep := Analyze(samples, Options{MinGrowth: DefaultMinGrowth})
	got := byName(rep)
	if c := got["kmalloc-128"]; !c.Flagged || c.Verdict != trend.Growing {
		t.Errorf("kmalloc-128: %+v", c)
	}
	if c := got["ext4_inode_cache"]; !c.Reclaimable || c.ReclaimableFrom != "name" || c.Flagged {
		t.Errorf("ext4_inode_cache: %+v", c)
	}
	if len(rep.System) != 0 {
		t.Errorf("no meminfo, yet system %+v", rep.System)
	}
	var b bytes.Buffer
	WriteText(&b, rep)
	testutil.Golden(t, "plain.golden", b.Bytes())

	// The same copies concatenated into one stream are the same samples.
	var cat bytes.Buffer
	for _, n := range names {
		data, _ := os.ReadFile(filepath.Join("testdata", n))
		cat.Write(data)
	}
	again, err := ReadSamples(&cat, 10*time.Second)
	if err != nil || len(again) != 6 {
		t.Fatalf("concatenated: %d samples, %v", len(again), err)
	}
	SetTimes(again, 10*time.Second)
	if !reflect.DeepEqual(stripLines(again), stripLines(samples)) {
		t.Errorf("concatenated copies read differently")
	}
}

func stripLines(s []Sample) []Sample {
	out := append([]Sample(nil), s...)
	for i := range out {
		out[i].Line = 0
	}
	return out
}

func TestTopLimit(t *testing.T) {
	rep := Analyze(readFiles(t, time.Second, "recording.txt"), Options{Top: 2, MinGrowth: DefaultMinGrowth})
	if len(rep.Growing) != 2 || rep.More != 3 || rep.Growing[0].Name != "kmalloc-128" {
		t.Errorf("top 2: %d shown, %d more, first %s", len(rep.Growing), rep.More, rep.Growing[0].Name)
	}
}

func TestMinGrowth(t *testing.T) {
	// kmalloc-128 grows 44 KiB over the window.
	rep := Analyze(readFiles(t, time.Second, "recording.txt"), Options{MinGrowth: 64 * 1024})
	if rep.Flagged != 0 {
		t.Errorf("flagged %d with a 64 KiB floor", rep.Flagged)
	}
}

func TestSUnreclaimFlagged(t *testing.T) {
	var samples []Sample
	for i := 0; i < 10; i++ {
		samples = append(samples, Sample{T: float64(i), Meminfo: map[string]uint64{
			"Slab": uint64(100e6 + i*8192), "SReclaimable": 60e6, "SUnreclaim": uint64(40e6 + i*8192)}})
	}
	rep := Analyze(samples, Options{MinGrowth: DefaultMinGrowth})
	if rep.Flagged != 1 || !rep.System[2].Flagged || rep.System[0].Flagged {
		t.Errorf("%+v", rep.System)
	}
	if len(rep.Warnings) != 1 {
		t.Errorf("warnings %q, want the one about missing slabinfo", rep.Warnings)
	}
}

func TestParseFormats(t *testing.T) {
	f, err := os.Open("testdata/slabinfo-6.18.txt")
	if err != nil {
		t.Fatal(err)
	}
	caches, err := ParseSlabinfo(f)
	f.Close()
	if err != nil || len(caches) != 235 {
		t.Fatalf("6.18 copy: %d caches, %v", len(caches), err)
	}
	if c := caches[0]; c.Name != "btrfs_delayed_node" || c.ObjSize != 312 || c.ObjPerSlab != 13 {
		t.Errorf("first cache %+v", c)
	}

	f, _ = os.Open("testdata/slabinfo-v2.0.txt")
	caches, err = ParseSlabinfo(f)
	f.Close()
	want := Cache{Name: "size-64", ActiveObjs: 10234, NumObjs: 10502, ObjSize: 64, ObjPerSlab: 59, PagesPerSlab: 1,
		ActiveSlabs: 178, NumSlabs: 178}
	if err != nil || len(caches) != 3 || caches[1] != want {
		t.Errorf("2.0: %+v %v", caches, err)
	}

	for file, msg := range map[string]string{
		"slabinfo-v1.1.txt": "line 1: slabinfo version 1.1 is not supported (2.0 and 2.1 are)",
		"bad-line.txt":      `line 4: not a slabinfo, meminfo or sample line: "this is not slabinfo"`,
	} {
		f, _ := os.Open(filepath.Join("testdata", file))
		_, err := ReadSamples(f, time.Second)
		f.Close()
		if err == nil || err.Error() != msg {
			t.Errorf("%s: %v, want %s", file, err, msg)
		}
	}
	f, _ = os.Open("testdata/backwards.txt")
	s, err := ReadSamples(f, time.Second)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := SetTimes(s, time.Second); err == nil || err.Error() != "line 4: sample time goes back or repeats (-4.000 s after the first, previous 0.000 s)" {
		t.Errorf("backwards: %v", err)
	}
	if _, err := ReadSamples(bytes.NewReader([]byte("sample 12\n\n")), time.Second); err == nil ||
		err.Error() != "line 1: sample has neither /proc/slabinfo nor /proc/meminfo" {
		t.Errorf("empty sample: %v", err)
	}
	if _, err := ReadSamples(bytes.NewReader([]byte("sample yesterday\n")), time.Second); err == nil ||
		err.Error() != `line 1: bad sample time "yesterday": want seconds since the epoch or RFC 3339` {
		t.Errorf("bad time: %v", err)
	}
	m, err := ParseMeminfo(bytes.NewReader([]byte("MemTotal: 100 kB\nHugePages_Total:       3\nActive(anon):  4 kB\n")))
	if err != nil || !reflect.DeepEqual(m, map[string]uint64{"MemTotal": 102400, "HugePages_Total": 3, "Active(anon)": 4096}) {
		t.Errorf("meminfo: %v %v", m, err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	mem := []byte("MemTotal: 100 kB\nSUnreclaim: 7 kB\n")
	slab := []byte("slabinfo - version: 2.1\n# name <active_objs>\nkmalloc-8 10 12 8 512 1 : tunables 0 0 0 : slabdata 1 1 0\n")
	var rec bytes.Buffer
	t0 := time.Unix(1732240000, 5)
	WriteSample(&rec, t0, mem, slab, []string{"dentry"})
	WriteSample(&rec, t0.Add(1500*time.Millisecond), mem, slab, []string{"dentry"})
	s, err := ReadSamples(&rec, time.Hour)
	if err != nil || len(s) != 2 {
		t.Fatalf("%d samples, %v", len(s), err)
	}
	SetTimes(s, time.Hour)
	if !s[0].Wall.Equal(t0) || s[1].T != 1.5 || s[1].Meminfo["SUnreclaim"] != 7168 || s[1].Caches[0].ActiveObjs != 10 ||
		!s[1].Reclaimable["dentry"] {
		t.Errorf("%+v", s)
	}
}

// TestLiveThisMachine samples this machine's /proc/slabinfo and
// /proc/meminfo for half a second.
func TestLiveThisMachine(t *testing.T) {
	if _, err := os.ReadFile("/proc/slabinfo"); err != nil {
		var pe *PathError
		_, cerr := Collect(context.Background(), LiveOptions{Interval: 100 * time.Millisecond, Duration: 100 * time.Millisecond})
		if errors.Is(err, fs.ErrPermission) && (!errors.As(cerr, &pe) || pe.Msg != "permission denied: readable by root only, run as root") {
			t.Errorf("unreadable slabinfo gave %v", cerr)
		}
		t.Skipf("/proc/slabinfo is not readable here (%v): needs root; checked the error message only", err)
	}
	var rec bytes.Buffer
	var progress []int
	samples, err := Collect(context.Background(), LiveOptions{
		Interval: 100 * time.Millisecond, Duration: 500 * time.Millisecond, Record: &rec,
		Progress: func(done, total int) {
			if total != 6 {
				t.Errorf("total %d, want 6", total)
			}
			progress = append(progress, done)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 6 || !reflect.DeepEqual(progress, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("%d samples, progress %v", len(samples), progress)
	}
	for i, s := range samples {
		if len(s.Caches) == 0 || s.Meminfo["SUnreclaim"] == 0 || s.Meminfo["MemTotal"] == 0 {
			t.Errorf("sample %d: %d caches, meminfo %d fields", i, len(s.Caches), len(s.Meminfo))
		}
		if i > 0 && (s.T-samples[i-1].T < 0.05 || s.T-samples[i-1].T > 0.5) {
			t.Errorf("sample %d %.3f s after the previous", i, s.T-samples[i-1].T)
		}
	}
	if _, err := os.Stat("/sys/kernel/slab"); err == nil && samples[0].Reclaimable == nil {
		t.Errorf("/sys/kernel/slab exists but reclaim_account was not read")
	}
	// The recording reads back to the same samples.
	back, err := ReadSamples(&rec, time.Second)
	if err != nil || len(back) != 6 {
		t.Fatalf("recording: %d samples, %v", len(back), err)
	}
	SetTimes(back, time.Second)
	for i := range back {
		if !reflect.DeepEqual(back[i].Caches, samples[i].Caches) || !reflect.DeepEqual(back[i].Meminfo, samples[i].Meminfo) ||
			back[i].T-samples[i].T > 1e-6 || samples[i].T-back[i].T > 1e-6 {
			t.Errorf("sample %d differs after recording", i)
		}
	}
	rep := Analyze(samples, Options{MinGrowth: DefaultMinGrowth})
	if rep.Samples != 6 || rep.Caches != len(samples[0].Caches) || len(rep.System) != 3 {
		t.Errorf("report: %d samples, %d caches, %d system series", rep.Samples, rep.Caches, len(rep.System))
	}
	var b bytes.Buffer
	if err := WriteJSON(&b, rep); err != nil || !json.Valid(b.Bytes()) {
		t.Errorf("JSON: %v", err)
	}
}

func TestCollectStopsOnCancel(t *testing.T) {
	if _, err := os.ReadFile("/proc/slabinfo"); err != nil {
		t.Skipf("/proc/slabinfo is not readable here (%v): needs root", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	samples, err := Collect(ctx, LiveOptions{Interval: 100 * time.Millisecond, Duration: 10 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) || len(samples) < 2 || len(samples) > 4 {
		t.Errorf("%d samples, %v", len(samples), err)
	}
}

func TestMissingSlabinfo(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meminfo"), []byte("MemTotal: 1 kB\n"), 0o644)
	_, err := Collect(context.Background(), LiveOptions{Proc: dir, Interval: time.Millisecond, Duration: time.Millisecond})
	want := filepath.Join(dir, "slabinfo") + ": not present: this kernel does not export slab statistics (CONFIG_SLUB_DEBUG)"
	if err == nil || err.Error() != want {
		t.Errorf("%v, want %s", err, want)
	}
}
