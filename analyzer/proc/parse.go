// Package proc watches processes' memory through /proc: one process
// mapping by mapping (leakanalyze proc), or every process at once with the
// system picture from /proc/meminfo (leakanalyze top). Growth is judged by
// the trend package's test, so only steady growth is flagged.
package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Status holds the memory lines of /proc/PID/status, in bytes.
type Status struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Pid      int    `json:"pid"`
	PPid     int    `json:"ppid"`
	Uid      int    `json:"uid"`
	Threads  int    `json:"threads"`
	VmPeak   uint64 `json:"vm_peak"`
	VmSize   uint64 `json:"vm_size"`
	VmHWM    uint64 `json:"vm_hwm"`
	VmRSS    uint64 `json:"vm_rss"`
	RssAnon  uint64 `json:"rss_anon"`
	RssFile  uint64 `json:"rss_file"`
	RssShmem uint64 `json:"rss_shmem"`
	VmData   uint64 `json:"vm_data"`
	VmSwap   uint64 `json:"vm_swap"`
	// HasMM is false for kernel threads, which have no memory lines.
	HasMM bool `json:"has_mm"`
}

// Zombie reports a process that has exited but not been reaped: its
// memory is gone.
func (s Status) Zombie() bool {
	return strings.HasPrefix(s.State, "Z") || strings.HasPrefix(s.State, "X")
}

// ParseStatus reads /proc/PID/status.
func ParseStatus(data []byte) (Status, error) {
	var s Status
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	seen := false
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Name":
			s.Name, seen = val, true
		case "State":
			s.State = val
		case "Pid":
			s.Pid, _ = strconv.Atoi(val)
		case "PPid":
			s.PPid, _ = strconv.Atoi(val)
		case "Uid":
			if f := strings.Fields(val); len(f) > 0 {
				s.Uid, _ = strconv.Atoi(f[0])
			}
		case "Threads":
			s.Threads, _ = strconv.Atoi(val)
		case "VmPeak":
			s.VmPeak = kb(val)
		case "VmSize":
			s.VmSize, s.HasMM = kb(val), true
		case "VmHWM":
			s.VmHWM = kb(val)
		case "VmRSS":
			s.VmRSS = kb(val)
		case "RssAnon":
			s.RssAnon = kb(val)
		case "RssFile":
			s.RssFile = kb(val)
		case "RssShmem":
			s.RssShmem = kb(val)
		case "VmData":
			s.VmData = kb(val)
		case "VmSwap":
			s.VmSwap = kb(val)
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !seen {
		return s, fmt.Errorf("not a /proc/PID/status file")
	}
	return s, nil
}

func kb(v string) uint64 {
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseUint(f[0], 10, 64)
	if len(f) > 1 && f[1] == "kB" {
		n *= 1024
	}
	return n
}

// Mapping is one entry of /proc/PID/smaps (or the one of smaps_rollup),
// sizes in bytes.
type Mapping struct {
	Start  uint64 `json:"start"`
	End    uint64 `json:"end"`
	Perms  string `json:"perms"`
	Offset uint64 `json:"offset"`
	Inode  uint64 `json:"inode"`
	// Path is the file, a pseudo name such as [heap], [stack] or
	// [anon:name], or empty for an anonymous mapping.
	Path         string `json:"path"`
	Size         uint64 `json:"size"`
	Rss          uint64 `json:"rss"`
	Pss          uint64 `json:"pss"`
	SharedClean  uint64 `json:"shared_clean"`
	SharedDirty  uint64 `json:"shared_dirty"`
	PrivateClean uint64 `json:"private_clean"`
	PrivateDirty uint64 `json:"private_dirty"`
	Anonymous    uint64 `json:"anonymous"`
	Swap         uint64 `json:"swap"`
	SwapPss      uint64 `json:"swap_pss"`
}

// USS is the memory only this process holds (smem's definition).
func (m Mapping) USS() uint64 { return m.PrivateClean + m.PrivateDirty }

// IsFile reports a mapping of a file (not anonymous, not a [pseudo] one).
func (m Mapping) IsFile() bool { return m.Path != "" && !strings.HasPrefix(m.Path, "[") }

var headerRe = regexp.MustCompile(`^([0-9a-f]+)-([0-9a-f]+) ([rwxsp-]{4}) ([0-9a-f]+) \S+ (\d+)\s*(.*)$`)

// ParseSmaps reads /proc/PID/smaps or /proc/PID/smaps_rollup.
func ParseSmaps(data []byte) ([]Mapping, error) {
	var (
		out []Mapping
		cur *Mapping
		n   int
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := headerRe.FindStringSubmatch(line); m != nil {
			var mp Mapping
			mp.Start, _ = strconv.ParseUint(m[1], 16, 64)
			mp.End, _ = strconv.ParseUint(m[2], 16, 64)
			mp.Perms = m[3]
			mp.Offset, _ = strconv.ParseUint(m[4], 16, 64)
			mp.Inode, _ = strconv.ParseUint(m[5], 10, 64)
			mp.Path = m[6]
			out = append(out, mp)
			cur = &out[len(out)-1]
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || cur == nil {
			if strings.TrimSpace(line) == "" {
				continue
			}
			return nil, fmt.Errorf("line %d: not a smaps line: %q", n, line)
		}
		switch key {
		case "Size":
			cur.Size = kb(val)
		case "Rss":
			cur.Rss = kb(val)
		case "Pss":
			cur.Pss = kb(val)
		case "Shared_Clean":
			cur.SharedClean = kb(val)
		case "Shared_Dirty":
			cur.SharedDirty = kb(val)
		case "Private_Clean":
			cur.PrivateClean = kb(val)
		case "Private_Dirty":
			cur.PrivateDirty = kb(val)
		case "Anonymous":
			cur.Anonymous = kb(val)
		case "Swap":
			cur.Swap = kb(val)
		case "SwapPss":
			cur.SwapPss = kb(val)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Totals sums mappings the way smaps_rollup does.
func Totals(maps []Mapping) Mapping {
	var t Mapping
	for _, m := range maps {
		t.Size += m.Size
		t.Rss += m.Rss
		t.Pss += m.Pss
		t.SharedClean += m.SharedClean
		t.SharedDirty += m.SharedDirty
		t.PrivateClean += m.PrivateClean
		t.PrivateDirty += m.PrivateDirty
		t.Anonymous += m.Anonymous
		t.Swap += m.Swap
		t.SwapPss += m.SwapPss
	}
	return t
}

// parseStartTime returns field 22 of /proc/PID/stat, the start time in
// clock ticks after boot: with the pid it names a process uniquely.
func parseStartTime(stat []byte) (uint64, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// After the comm come state (field 3) ... starttime (field 22).
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}
