package report

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// TextOptions shape the text report.
type TextOptions struct {
	// Show lists the kinds whose sites are printed; empty prints all.
	Show []string
	// MaxFrames caps the frames printed per site (0: all).
	MaxFrames int
}

// WriteText writes the compact human report: a line per process, a block
// per leaking site, anomalies, implicit leaks and a summary per kind.
func WriteText(w io.Writer, r *Report, o TextOptions) error {
	ew := &errWriter{w: w}
	show := map[string]bool{}
	for _, k := range o.Show {
		show[k] = true
	}
	for _, p := range r.Processes {
		status := "killed or cut short"
		if p.Signal != "" {
			status = "killed by " + p.Signal
		} else if p.ExitStatus >= 0 {
			status = fmt.Sprintf("exit %d", p.ExitStatus)
		}
		ew.printf("pid %d %s: %s, %s events, peak %s at %s\n", p.Pid, filepath.Base(p.Exe), status,
			Count(p.Events), Size(p.PeakBytes), Seconds(p.PeakTimeNs))
	}
	for _, warn := range r.Warnings {
		ew.printf("warning: %s\n", warn)
	}
	shown := 0
	for _, l := range r.Leaks {
		if len(show) > 0 && !show[l.Kind] || l.Suppressed != "" {
			continue
		}
		if shown == 0 {
			ew.printf("\n")
		}
		shown++
		if l.IndirectBytes > 0 {
			// valgrind's form: "152 (40 direct, 112 indirect) bytes".
			ew.printf("%s (%s direct, %s indirect) bytes in %s  %s  %s", Count(l.Bytes+l.IndirectBytes),
				Count(l.Bytes), Count(l.IndirectBytes), Blocks(l.Blocks), l.Kind, l.Source)
		} else {
			ew.printf("%s in %s  %s  %s", Bytes(l.Bytes), Blocks(l.Blocks), l.Kind, l.Source)
		}
		if l.Family != "" {
			ew.printf("  %s", l.Family)
		}
		if l.Pattern != "" {
			ew.printf("  %s", l.Pattern)
		}
		if len(r.Processes) > 1 {
			ew.printf("  pid %d", l.Pid)
		}
		ew.printf("\n")
		writeFrames(ew, l.Frames, o.MaxFrames)
		if len(l.Content) > 0 {
			writeContent(ew, l.Content)
		}
	}
	if len(r.Anomalies) > 0 {
		ew.printf("\nanomalies:\n")
		for _, a := range r.Anomalies {
			ew.printf("  %s at 0x%x: %s", a.Type, a.Address, a.Detail)
			if len(r.Processes) > 1 {
				ew.printf("  pid %d", a.Pid)
			}
			ew.printf("\n")
			writeFrames(ew, a.Frames, o.MaxFrames)
		}
	}
	if len(r.Implicit) > 0 {
		ew.printf("\nimplicit leaks (memory that grew during the run and was freed only at the end):\n")
		for _, l := range r.Implicit {
			ew.printf("  peak %s in %s, growing %s/s\n", Bytes(l.Bytes), Blocks(l.Blocks), Size(uint64(l.GrowthBytesPerSec)))
			writeFrames(ew, l.Frames, o.MaxFrames)
		}
	}
	ew.printf("\n")
	kinds := make([]string, 0, len(r.Summary))
	for k := range r.Summary {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kindRank(kinds[i]) < kindRank(kinds[j]) })
	if len(kinds) == 0 {
		ew.printf("no leaks\n")
	}
	for _, k := range kinds {
		t := r.Summary[k]
		ew.printf("%-10s %s in %s\n", k+":", Bytes(t.Bytes), Blocks(t.Blocks))
	}
	return ew.err
}

func kindRank(k string) int {
	for i, s := range []string{KindDefinite, KindIndirect, KindPossible, KindReachable, KindUnfreed} {
		if s == k {
			return i
		}
	}
	return 99
}

func writeFrames(ew *errWriter, fr []Frame, max int) {
	for i, f := range fr {
		if max > 0 && i == max {
			ew.printf("      ... %d more\n", len(fr)-max)
			break
		}
		ew.printf("      %s\n", FrameString(f))
	}
}

// FrameString formats a frame as "function file:line [module]".
func FrameString(f Frame) string {
	var b strings.Builder
	if f.Function != "" {
		b.WriteString(f.Function)
	} else {
		b.WriteString("??")
	}
	if f.File != "" {
		fmt.Fprintf(&b, "  %s:%d", f.File, f.Line)
	} else if f.Module != "" {
		fmt.Fprintf(&b, "  (in %s)", filepath.Base(f.Module))
		if f.Address != 0 {
			fmt.Fprintf(&b, " 0x%x", f.Address)
		}
	} else if f.Address != 0 {
		fmt.Fprintf(&b, "  0x%x", f.Address)
	}
	if f.Inlined {
		b.WriteString("  (inlined)")
	}
	return b.String()
}

func writeContent(ew *errWriter, c []byte) {
	for off := 0; off < len(c); off += 16 {
		end := min(off+16, len(c))
		var hex, asc strings.Builder
		for i := off; i < off+16; i++ {
			if i < end {
				fmt.Fprintf(&hex, "%02x ", c[i])
				ch := c[i]
				if ch < 32 || ch > 126 {
					ch = '.'
				}
				asc.WriteByte(ch)
			} else {
				hex.WriteString("   ")
			}
		}
		ew.printf("      %04x  %s %s\n", off, hex.String(), asc.String())
	}
}

// Count formats n with thousands separators, as valgrind does.
func Count(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Bytes formats a byte count: "1 byte", "1,024 bytes".
func Bytes(n uint64) string {
	if n == 1 {
		return "1 byte"
	}
	return Count(n) + " bytes"
}

// Blocks formats a block count.
func Blocks(n uint64) string {
	if n == 1 {
		return "1 block"
	}
	return Count(n) + " blocks"
}

// Size formats a byte count in binary units.
func Size(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Seconds formats nanoseconds as seconds.
func Seconds(ns uint64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

// WriteJSON writes the report as documented in docs/json-report.md.
func WriteJSON(w io.Writer, r *Report) error {
	out := *r
	if out.Processes == nil {
		out.Processes = []Process{}
	}
	if out.Leaks == nil {
		out.Leaks = []Leak{}
	}
	if out.Anomalies == nil {
		out.Anomalies = []Anomaly{}
	}
	if out.Summary == nil {
		out.Summary = map[string]Totals{}
	}
	for i := range out.Leaks {
		if out.Leaks[i].Frames == nil {
			out.Leaks[i].Frames = []Frame{}
		}
	}
	for i := range out.Anomalies {
		if out.Anomalies[i].Frames == nil {
			out.Anomalies[i].Frames = []Frame{}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&out)
}
