package main

import (
	"io"

	"libleak/analyzer/pprofout"
	"libleak/analyzer/report"
)

func writePprof(w io.Writer, r *report.Report) error {
	return pprofout.Write(w, r)
}
