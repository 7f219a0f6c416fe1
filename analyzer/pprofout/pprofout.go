// Package pprofout writes a leak report as a pprof profile, so that the
// pprof tools (go tool pprof, pprof -http, speedscope, flame graph viewers)
// can browse what leaked: `go tool pprof -top leaks.pb.gz` lists the
// functions that allocated the leaked memory.
//
// The profile has two sample types, leaked_objects/count and
// leaked_space/bytes (the default), and one sample per leak site of the
// report that is not suppressed. Each sample carries the labels kind,
// source, family and exe (the executable's base name) and the numeric
// label pid, so `-tagfocus kind=definite` or `-tagfocus pid=1234` narrows a
// profile of a whole run. Implicit leaks (memory freed only at exit) are
// not samples: they were not left allocated.
//
// A location is one program counter: its inlined calls are Lines of the
// same Location, innermost first, as pprof expects. Frames whose function
// is unknown become locations without lines, which pprof shows by address.
// There is one mapping per module, named by its path, with the build ID
// the report recorded for it; the report does not carry the module's
// address range, so that is left empty. Every mapping is marked as
// symbolized so that pprof never tries to symbolize the addresses again
// against whatever file is now at that path.
package pprofout

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/pprof/profile"

	"libleak/analyzer/report"
)

// Sample value indexes.
const (
	ObjectsIndex = 0
	SpaceIndex   = 1
)

// Build turns the report into a profile.
func Build(r *report.Report) *profile.Profile {
	b := &builder{
		p: &profile.Profile{
			SampleType: []*profile.ValueType{
				{Type: "leaked_objects", Unit: "count"},
				{Type: "leaked_space", Unit: "bytes"},
			},
			DefaultSampleType: "leaked_space",
			PeriodType:        &profile.ValueType{Type: "space", Unit: "bytes"},
			Period:            1,
		},
		mappings:  map[string]*profile.Mapping{},
		buildIDs:  map[string]string{},
		functions: map[[2]string]*profile.Function{},
		locations: map[string]*profile.Location{},
	}
	if r == nil {
		return b.p
	}
	for _, m := range r.Modules {
		b.buildIDs[m.Path] = m.BuildID
	}
	exes := map[int]string{}
	for _, pr := range r.Processes {
		exes[pr.Pid] = filepath.Base(pr.Exe)
		if d := int64(pr.DurationNs); d > b.p.DurationNanos {
			b.p.DurationNanos = d
		}
	}
	b.p.Comments = append(b.p.Comments, fmt.Sprintf("libleak: leak sites of %d processes", len(r.Processes)))
	for i := range r.Leaks {
		l := &r.Leaks[i]
		if l.Suppressed != "" {
			continue
		}
		s := &profile.Sample{
			Value:    []int64{int64(l.Blocks), int64(l.Bytes)},
			Location: b.stack(l.Frames),
			Label:    map[string][]string{"kind": {l.Kind}},
			NumLabel: map[string][]int64{"pid": {int64(l.Pid)}},
		}
		if l.Source != "" {
			s.Label["source"] = []string{l.Source}
		}
		if l.Family != "" {
			s.Label["family"] = []string{l.Family}
		}
		if exe := exes[l.Pid]; exe != "" {
			s.Label["exe"] = []string{exe}
		}
		b.p.Sample = append(b.p.Sample, s)
	}
	return b.p
}

// Write writes the report as a gzipped pprof profile.
func Write(w io.Writer, r *report.Report) error {
	p := Build(r)
	if err := p.CheckValid(); err != nil {
		// Build only links what it created: an invalid profile is a
		// defect here, not in the input.
		return fmt.Errorf("pprof profile: %v", err)
	}
	return p.Write(w)
}

type builder struct {
	p         *profile.Profile
	mappings  map[string]*profile.Mapping
	buildIDs  map[string]string // by module path
	functions map[[2]string]*profile.Function
	locations map[string]*profile.Location
}

// stack turns frames, innermost first, into locations, folding each run of
// inlined frames into the location of the frame they were inlined into.
func (b *builder) stack(frames []report.Frame) []*profile.Location {
	var locs []*profile.Location
	start := 0
	for i := range frames {
		if frames[i].Inlined && i < len(frames)-1 {
			continue
		}
		locs = append(locs, b.location(frames[start:i+1]))
		start = i + 1
	}
	return locs
}

func known(name string) bool {
	return name != "" && name != "??" && name != "???"
}

// location returns the location of one program counter: group holds its
// inlined frames, innermost first, then the frame they are inlined into.
func (b *builder) location(group []report.Frame) *profile.Location {
	outer := group[len(group)-1]
	var key strings.Builder
	fmt.Fprintf(&key, "%s\x00%x", outer.Module, outer.Address)
	var lines []profile.Line
	for _, f := range group {
		if !known(f.Function) && f.File == "" {
			continue
		}
		fmt.Fprintf(&key, "\x00%s\x00%s\x00%d", f.Function, f.File, f.Line)
		lines = append(lines, profile.Line{Function: b.function(f), Line: int64(f.Line)})
	}
	if len(lines) == 0 && outer.Address == 0 {
		// Neither a name nor an address: say so rather than leave pprof
		// an empty location.
		lines = append(lines, profile.Line{Function: b.function(report.Frame{Function: "??"})})
	}
	k := key.String()
	if l := b.locations[k]; l != nil {
		return l
	}
	l := &profile.Location{
		ID:      uint64(len(b.p.Location) + 1),
		Address: outer.Address,
		Line:    lines,
		Mapping: b.mapping(outer),
	}
	b.locations[k] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

func (b *builder) function(f report.Frame) *profile.Function {
	name := f.Function
	if !known(name) {
		name = "??"
	}
	k := [2]string{name, f.File}
	if fn := b.functions[k]; fn != nil {
		return fn
	}
	fn := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: f.File}
	b.functions[k] = fn
	b.p.Function = append(b.p.Function, fn)
	return fn
}

// mapping returns the module's mapping, nil for a frame of no module.
func (b *builder) mapping(f report.Frame) *profile.Mapping {
	if f.Module == "" {
		return nil
	}
	m := b.mappings[f.Module]
	if m == nil {
		m = &profile.Mapping{ID: uint64(len(b.p.Mapping) + 1), File: f.Module, BuildID: b.buildIDs[f.Module],
			HasFunctions: true, HasInlineFrames: true}
		b.mappings[f.Module] = m
		b.p.Mapping = append(b.p.Mapping, m)
	}
	if f.File != "" {
		m.HasFilenames = true
	}
	if f.Line > 0 {
		m.HasLineNumbers = true
	}
	return m
}
