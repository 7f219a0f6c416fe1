package main

import (
	"bufio"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"libleak/analyzer/event"
	"libleak/analyzer/traceformat"
)

func init() {
	register("dump", "print a trace's records as text, one per line", runDump)
}

type dumper struct{ w *bufio.Writer }

func (d dumper) Header(h *event.Header) {
	fmt.Fprintf(d.w, "header pid=%d ppid=%d exe=%s unwinder=%s depth=%d forked=%v cmdline=%q\n",
		h.Pid, h.Ppid, h.Exe, h.Unwinder, h.Depth, h.Forked, h.Cmdline)
}

func (d dumper) Module(m *event.Module) {
	fmt.Fprintf(d.w, "module t=%d base=0x%x build-id=%x unloaded=%d %s\n", m.Time, m.Base, m.BuildID, m.Unloaded, m.Path)
}

func (d dumper) Stack(id uint64, pcs []uint64) {
	fmt.Fprintf(d.w, "stack %d", id)
	for _, pc := range pcs {
		fmt.Fprintf(d.w, " 0x%x", pc)
	}
	fmt.Fprintln(d.w)
}

func (d dumper) Event(e *event.Event) {
	fmt.Fprintf(d.w, "%s %s tid=%d t=%d", e.Kind, e.Op, e.Tid, e.Time)
	if e.Time2 != 0 {
		fmt.Fprintf(d.w, " t2=%d", e.Time2)
	}
	if e.OldAddr != 0 {
		fmt.Fprintf(d.w, " old=0x%x", e.OldAddr)
	}
	if e.OldSize != 0 {
		fmt.Fprintf(d.w, " oldsize=%d", e.OldSize)
	}
	fmt.Fprintf(d.w, " addr=0x%x", e.Addr)
	if e.Size != 0 || e.Kind != event.Free {
		fmt.Fprintf(d.w, " size=%d", e.Size)
	}
	if e.Stack != 0 {
		fmt.Fprintf(d.w, " stack=%d", e.Stack)
	}
	if e.Flags != 0 {
		fmt.Fprintf(d.w, " flags=0x%x", e.Flags)
	}
	fmt.Fprintln(d.w)
}

func runDump(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("dump", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintf(stderr, "leakanalyze: dump: %v\n", err)
		return exitBadInput
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "usage: leakanalyze dump TRACE\n")
		return exitBadInput
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	st, err := traceformat.DecodeFile(fs.Arg(0), dumper{w})
	if err != nil {
		w.Flush()
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	fmt.Fprintf(w, "end frames=%d events=%d dropped=%d truncated=%v ended=%v reason=%d status=%d exec=%q\n",
		st.Frames, st.Events, st.Dropped, st.Truncated, st.Ended, st.EndReason, st.ExitStatus, st.ExecPath)
	for _, n := range st.Notes {
		fmt.Fprintf(w, "note %s\n", n)
	}
	return exitOK
}

func (d dumper) Scan(s *event.Scan) {
	fmt.Fprintf(d.w, "scan t=%d blocks=%d unreachable=%d\n", s.Time, s.Blocks, len(s.Verdicts))
	for _, v := range s.Verdicts {
		fmt.Fprintf(d.w, "verdict addr=0x%x kind=%d indirect=%d content=%x\n", v.Addr, v.Kind, v.Indirect, v.Content)
	}
}
