package main

import (
	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
)

// newSymbolizer returns the frame namer for reports.
func newSymbolizer(debugDirs []string, sysroot string, demangle bool) func([]event.Module) analyze.FrameSource {
	return nil
}
