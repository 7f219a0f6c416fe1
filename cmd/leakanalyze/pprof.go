package main

import (
	"fmt"
	"io"

	"libleak/analyzer/report"
)

func writePprof(w io.Writer, r *report.Report) error {
	return fmt.Errorf("pprof output is not available yet")
}
