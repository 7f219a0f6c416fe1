package main

import (
	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/symbolize"
)

// newSymbolizer returns the frame namer for reports and its prefetch: one
// symbolizer for the whole run, so objects shared by its processes are
// read once.
func newSymbolizer(debugDirs []string, sysroot string, demangle bool) (func([]event.Module) analyze.FrameSource, func(event.Module)) {
	s := symbolize.New(symbolize.Options{DebugDirs: debugDirs, Sysroot: sysroot, Demangle: demangle})
	return func(mods []event.Module) analyze.FrameSource { return s.Process(mods) }, s.Prefetch
}
