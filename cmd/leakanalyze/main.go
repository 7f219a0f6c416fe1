// Command leakanalyze turns libleak traces, glibc mtrace files, kmemleak
// reports and /proc samples into leak reports. Each subcommand lives in its
// own file and registers itself in commands; main only dispatches.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit statuses, documented in the README.
const (
	exitOK       = 0
	exitLeaks    = 1 // leaks of the failing kinds remain (run, and analyze with --fail-on)
	exitBadInput = 2 // usage error, unreadable, corrupt or foreign input
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	commands[name] = command{summary, run}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: leakanalyze [analyze] [flags] TRACE...\n       leakanalyze COMMAND [flags] [args]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'leakanalyze COMMAND --help' for a command's flags.\n")
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitBadInput
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	}
	if c, ok := commands[args[0]]; ok {
		return c.run(args[1:], stdout, stderr)
	}
	// Anything else is a trace file or a flag of the default command.
	if c, ok := commands["analyze"]; ok && (strings.HasPrefix(args[0], "-") || fileExists(args[0])) {
		return c.run(args, stdout, stderr)
	}
	if strings.ContainsAny(args[0], "/.") {
		fmt.Fprintf(stderr, "leakanalyze: %s: no such file\n", args[0])
	} else {
		fmt.Fprintf(stderr, "leakanalyze: %s: no such command or file (see leakanalyze --help)\n", args[0])
	}
	return exitBadInput
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil || p == "-"
}

func main() {
	rc := dispatch(os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(rc)
}
