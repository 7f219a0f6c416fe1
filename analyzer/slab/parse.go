// Package slab watches the kernel's slab caches over time: it samples
// /proc/slabinfo and /proc/meminfo, or reads recorded samples, and tests
// every cache's active memory for steady growth — slabtop over time.
package slab

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Cache is one line of /proc/slabinfo.
type Cache struct {
	Name         string `json:"name"`
	ActiveObjs   uint64 `json:"active_objs"`
	NumObjs      uint64 `json:"num_objs"`
	ObjSize      uint64 `json:"objsize"`
	ObjPerSlab   uint64 `json:"objperslab"`
	PagesPerSlab uint64 `json:"pagesperslab"`
	ActiveSlabs  uint64 `json:"active_slabs"`
	NumSlabs     uint64 `json:"num_slabs"`
}

// ActiveBytes is the memory the cache's live objects take.
func (c Cache) ActiveBytes() uint64 { return c.ActiveObjs * c.ObjSize }

// Sample is the slab state at one moment.
type Sample struct {
	// T is seconds since the first sample of the series.
	T float64
	// Wall is when the sample was taken; zero when a recording did not say.
	Wall time.Time
	// Meminfo holds /proc/meminfo: sizes in bytes, counts as printed. Nil
	// when the sample has no meminfo.
	Meminfo map[string]uint64
	Caches  []Cache
	// Reclaimable lists the caches whose objects the kernel may reclaim
	// (reclaim_account=1), when known; nil when not.
	Reclaimable map[string]bool
	// Line is where the sample starts in its file, for error messages.
	Line int
}

// InputError is a sample file that cannot be read as one.
type InputError struct {
	Line int
	Msg  string
}

func (e *InputError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

var meminfoRe = regexp.MustCompile(`^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?\s*$`)

// ParseMeminfo reads /proc/meminfo. kB values become bytes.
func ParseMeminfo(r io.Reader) (map[string]uint64, error) {
	m := map[string]uint64{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !addMeminfo(m, line) {
			return nil, &InputError{n, fmt.Sprintf("not a /proc/meminfo line: %q", line)}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, &InputError{n, "empty /proc/meminfo"}
	}
	return m, nil
}

func addMeminfo(m map[string]uint64, line string) bool {
	sm := meminfoRe.FindStringSubmatch(line)
	if sm == nil {
		return false
	}
	v, err := strconv.ParseUint(sm[2], 10, 64)
	if err != nil {
		return false
	}
	if strings.HasSuffix(strings.TrimSpace(line), "kB") {
		v *= 1024
	}
	m[sm[1]] = v
	return true
}

// parseCacheLine reads one cache line by position: version 2.0 and 2.1
// share the columns, SLAB fills the tunables, SLUB prints zeros there.
func parseCacheLine(line string) (Cache, bool) {
	f := strings.Fields(line)
	if len(f) < 6 {
		return Cache{}, false
	}
	var nums [5]uint64
	for i := range nums {
		v, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return Cache{}, false
		}
		nums[i] = v
	}
	c := Cache{Name: f[0], ActiveObjs: nums[0], NumObjs: nums[1], ObjSize: nums[2], ObjPerSlab: nums[3], PagesPerSlab: nums[4]}
	for i := 6; i+2 < len(f); i++ {
		if f[i] == "slabdata" {
			c.ActiveSlabs, _ = strconv.ParseUint(f[i+1], 10, 64)
			c.NumSlabs, _ = strconv.ParseUint(f[i+2], 10, 64)
		}
	}
	return c, true
}

// ParseSlabinfo reads one /proc/slabinfo.
func ParseSlabinfo(r io.Reader) ([]Cache, error) {
	samples, err := ReadSamples(r, time.Second)
	if err != nil {
		return nil, err
	}
	if len(samples) != 1 || samples[0].Caches == nil {
		return nil, &InputError{1, "not a single /proc/slabinfo"}
	}
	return samples[0].Caches, nil
}

const (
	sampleMark      = "sample "
	reclaimableMark = "reclaimable:"
	versionMark     = "slabinfo - version:"
)

// ReadSamples reads a recording (see WriteSample) or plain copies of
// /proc/slabinfo and /proc/meminfo. Samples without a time are taken to
// be interval after the one before.
func ReadSamples(r io.Reader, interval time.Duration) ([]Sample, error) {
	var (
		out    []Sample
		cur    *Sample
		lineNo int
	)
	begin := func(line int) *Sample {
		out = append(out, Sample{Line: line})
		return &out[len(out)-1]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lineNo++
		raw := sc.Bytes()
		if bytes.IndexByte(raw, 0) >= 0 {
			return nil, &InputError{lineNo, "binary data, not a slab sample"}
		}
		line := strings.TrimRight(string(raw), "\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
		case strings.HasPrefix(line, sampleMark):
			when, err := parseTime(strings.TrimSpace(line[len(sampleMark):]))
			if err != nil {
				return nil, &InputError{lineNo, err.Error()}
			}
			cur = begin(lineNo)
			cur.Wall = when
		case strings.HasPrefix(line, versionMark):
			v := strings.TrimSpace(line[len(versionMark):])
			if !strings.HasPrefix(v, "2.") {
				return nil, &InputError{lineNo, fmt.Sprintf("slabinfo version %s is not supported (2.0 and 2.1 are)", v)}
			}
			// Plain copies concatenated: each slabinfo header without a
			// sample line of its own starts a new sample.
			if cur == nil || cur.Caches != nil {
				cur = begin(lineNo)
			}
			cur.Caches = []Cache{}
		case strings.HasPrefix(line, "# name"):
		case strings.HasPrefix(line, reclaimableMark):
			if cur == nil {
				cur = begin(lineNo)
			}
			cur.Reclaimable = map[string]bool{}
			for _, n := range strings.Fields(line[len(reclaimableMark):]) {
				cur.Reclaimable[n] = true
			}
		case meminfoRe.MatchString(line):
			if cur == nil || (cur.Meminfo != nil && cur.Caches != nil && cur.Wall.IsZero()) {
				cur = begin(lineNo)
			}
			if cur.Meminfo == nil {
				cur.Meminfo = map[string]uint64{}
			}
			addMeminfo(cur.Meminfo, line)
		default:
			c, ok := parseCacheLine(line)
			if !ok || cur == nil || cur.Caches == nil {
				return nil, &InputError{lineNo, fmt.Sprintf("not a slabinfo, meminfo or sample line: %q", shorten(trimmed))}
			}
			cur.Caches = append(cur.Caches, c)
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &InputError{lineNo + 1, "line longer than 1 MiB, not a slab sample"}
		}
		return nil, err
	}
	for _, s := range out {
		if s.Caches == nil && s.Meminfo == nil {
			return nil, &InputError{s.Line, "sample has neither /proc/slabinfo nor /proc/meminfo"}
		}
	}
	return out, nil
}

// parseTime accepts seconds since the epoch (date +%s.%N) or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		sec, frac, _ := strings.Cut(s, ".")
		secs, err := strconv.ParseInt(sec, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad sample time %q", s)
		}
		var ns int64
		if frac != "" {
			frac = (frac + "000000000")[:9]
			ns, _ = strconv.ParseInt(frac, 10, 64)
		}
		return time.Unix(secs, ns), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad sample time %q: want seconds since the epoch or RFC 3339", s)
	}
	return t, nil
}

// SetTimes fills T. When the first sample has a time, every timed sample
// is placed by its time; untimed samples are interval after the previous
// one. Times must increase.
func SetTimes(samples []Sample, interval time.Duration) error {
	var origin time.Time
	prevT := 0.0
	for i := range samples {
		s := &samples[i]
		switch {
		case i == 0:
			s.T = 0
			origin = s.Wall
		case !s.Wall.IsZero() && !origin.IsZero():
			s.T = s.Wall.Sub(origin).Seconds()
		default:
			s.T = prevT + interval.Seconds()
		}
		if i > 0 && s.T <= prevT {
			return &InputError{s.Line, fmt.Sprintf("sample time goes back or repeats (%.3f s after the first, previous %.3f s)", s.T, prevT)}
		}
		prevT = s.T
	}
	return nil
}

func shorten(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// WriteSample appends one sample in the recording format: a "sample"
// line with seconds since the epoch, /proc/meminfo as read, an optional
// "reclaimable:" line, then /proc/slabinfo as read.
func WriteSample(w io.Writer, when time.Time, meminfo, slabinfo []byte, reclaimable []string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%d.%09d\n", sampleMark, when.Unix(), when.Nanosecond())
	b.Write(meminfo)
	if len(meminfo) > 0 && meminfo[len(meminfo)-1] != '\n' {
		b.WriteByte('\n')
	}
	if reclaimable != nil {
		fmt.Fprintf(&b, "%s %s\n", reclaimableMark, strings.Join(reclaimable, " "))
	}
	b.Write(slabinfo)
	if len(slabinfo) > 0 && slabinfo[len(slabinfo)-1] != '\n' {
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}
