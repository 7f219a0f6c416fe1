package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/mtrace"
	"libleak/analyzer/traceformat"
)

func init() {
	// glibc MALLOC_TRACE files are accepted wherever a trace is.
	analyze.MtraceSniff = mtrace.Sniff
	analyze.MtraceDecode = func(r *bufio.Reader, name string, h event.Handler) (traceformat.Stats, error) {
		var p mtrace.Parser
		err := p.Parse(r, name, h)
		s := p.Stats()
		return traceformat.Stats{Events: s.Allocs + s.Frees + s.Reallocs, Ended: s.Ended, Truncated: s.Truncated, ExitStatus: -1}, err
	}
	register("export", "write a trace in another format (--mtrace: glibc mtrace text)", runExport)
}

func runExport(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	asMtrace := fs.Bool("mtrace", false, "write glibc mtrace text, as MALLOC_TRACE would (the only format so far)")
	out := fs.StringP("output", "o", "", "write to this file instead of stdout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: leakanalyze export --mtrace [-o FILE] TRACE\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintf(stderr, "leakanalyze: export: %v\n", err)
		return exitBadInput
	}
	if !*asMtrace || fs.NArg() != 1 {
		fs.Usage()
		return exitBadInput
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
			return exitBadInput
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	mw := mtrace.NewWriter(bw)
	if _, err := traceformat.DecodeFile(fs.Arg(0), mw); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	if err := mw.Close(); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	if err := bw.Flush(); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	return exitOK
}
