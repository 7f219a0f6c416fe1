package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// LEAKANALYZE_CPUPROFILE=FILE writes a CPU profile of the run to FILE: the
// way default.pgo (the profile the Go compiler optimizes this command
// with) is made, and a way to see where a slow analysis spends its time.
var stopProfile = func() {}

func init() {
	p := os.Getenv("LEAKANALYZE_CPUPROFILE")
	if p == "" {
		return
	}
	f, err := os.Create(p)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "leakanalyze: LEAKANALYZE_CPUPROFILE: %v\n", err)
		return
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
