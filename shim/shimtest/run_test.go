// Package shimtest runs real programs under libleak.so. It is a separate
// package because the shim's own package defines malloc: a test binary
// built from it would trace itself.
package shimtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"libleak/analyzer/analyze"
	"libleak/internal/testutil"
)

// result is one run of a command.
type result struct {
	stdout, stderr string
	status         int
	traces         []string
}

// run runs argv in dir with extra environment; under the shim when traced.
// runLimit bounds one run of a program in these tests.
const runLimit = 2 * time.Minute

func run(t *testing.T, traced bool, dir string, env []string, stdin string, argv ...string) result {
	t.Helper()
	// A program that never ends under the tracer (one of its threads
	// kept alive) fails here instead of hanging the suite.
	ctx, cancel := context.WithTimeout(context.Background(), runLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out := t.TempDir()
	if traced {
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+testutil.Shim(t), "LEAK_OUT="+out)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v (traced %v): still running after %v, killed", argv, traced, runLimit)
	}
	r := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.status = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.status = 128 + int(ws.Signal())
		}
	case err != nil:
		t.Fatalf("%v: %v", argv, err)
	}
	r.traces, _ = filepath.Glob(filepath.Join(out, "leak.*"))
	sort.Strings(r.traces)
	return r
}

// same runs argv natively and traced and asserts identical stdout and
// exit status, and that every trace decodes completely.
func same(t *testing.T, dir string, env []string, stdin string, argv ...string) result {
	t.Helper()
	native := run(t, false, dir, env, stdin, argv...)
	traced := run(t, true, dir, env, stdin, argv...)
	if native.stdout != traced.stdout {
		t.Errorf("%v: stdout differs under libleak:\nnative: %q\ntraced: %q", argv, clip(native.stdout), clip(traced.stdout))
	}
	if native.status != traced.status {
		t.Errorf("%v: exit status %d natively, %d under libleak (stderr %q)", argv, native.status, traced.status, traced.stderr)
	}
	if strings.Contains(traced.stderr, "libleak:") {
		t.Errorf("%v: libleak complained: %s", argv, traced.stderr)
	}
	if len(traced.traces) == 0 {
		t.Fatalf("%v: no trace written", argv)
	}
	for _, p := range traced.traces {
		in, err := analyze.Load(p)
		if err != nil {
			t.Errorf("%v: %v", argv, err)
			continue
		}
		if in.Stats.Truncated || in.Stats.Dropped != 0 {
			t.Errorf("%s: truncated=%v dropped=%d", p, in.Stats.Truncated, in.Stats.Dropped)
		}
	}
	return traced
}

func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + "…"
	}
	return s
}

func need(t *testing.T, prog string) string {
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Skipf("%s is not installed", prog)
	}
	return p
}

func TestRealPrograms(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.txt")
	var b strings.Builder
	for i := 0; i < 200000; i++ {
		b.WriteString(strings.Repeat("x", i%17))
		b.WriteString(" line ")
		b.WriteString(string(rune('a' + (i*7919)%26)))
		b.WriteString("\n")
	}
	if err := os.WriteFile(big, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "hello.c"), []byte("#include <stdio.h>\nint main(void){puts(\"hi\");return 3;}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "Makefile"), []byte("all:\n\techo one\n\techo two | tr a-z A-Z\n\tsh -c 'exit 0'\n\tls Makefile\n"), 0o644)

	t.Run("bash", func(t *testing.T) {
		r := same(t, dir, nil, "", need(t, "bash"), "-c", "for i in 1 2 3; do echo $i; done | sort -r; x=$(echo sub); echo $x; exit 7")
		if r.status != 7 {
			t.Errorf("status %d", r.status)
		}
	})
	t.Run("python3", func(t *testing.T) {
		py := `
import threading, subprocess
out = []
def work(n):
    out.append(sum(len(str(i)) for i in range(n)))
ts = [threading.Thread(target=work, args=(20000*(k+1),)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(out))
print(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip())
`
		same(t, dir, nil, "", need(t, "/usr/bin/python3"), "-c", py)
	})
	t.Run("perl", func(t *testing.T) {
		same(t, dir, nil, "", need(t, "perl"), "-e", `my %h; $h{$_ % 97} .= "x" for 1..50000; print scalar(keys %h), " ", length($h{3}), "\n"`)
	})
	t.Run("ls", func(t *testing.T) { same(t, dir, nil, "", need(t, "ls"), "-la", "--time-style=+", "/usr") })
	t.Run("sort", func(t *testing.T) { same(t, dir, nil, "", need(t, "sort"), big) })
	t.Run("gcc", func(t *testing.T) {
		r := same(t, dir, nil, "", need(t, "gcc"), "-O2", "-o", filepath.Join(dir, "hello"), filepath.Join(dir, "hello.c"))
		if len(r.traces) < 3 {
			t.Errorf("gcc runs cc1, as and collect2/ld: want ≥ 3 traces, got %d", len(r.traces))
		}
	})
	t.Run("git", func(t *testing.T) {
		g := need(t, "git")
		repo := t.TempDir()
		script := "cd $(mktemp -d -p .) && " + g + " init -q . && " + g + " -c user.name=a -c user.email=a@b commit -q --allow-empty -m first && " + g + " log --format=%s"
		same(t, repo, []string{"GIT_CONFIG_NOSYSTEM=1", "HOME=" + repo}, "", "/bin/sh", "-c", script)
	})
	t.Run("ar", func(t *testing.T) {
		// binutils' ar dlopens a C++ plugin that brings libstdc++ into a
		// local scope: operator new must still find its real definition.
		obj := filepath.Join(dir, "a.o")
		if b, err := exec.Command("gcc", "-c", "-o", obj, filepath.Join(dir, "hello.c")).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, b)
		}
		same(t, dir, nil, "", need(t, "ar"), "rcs", filepath.Join(dir, "libx.a"), obj)
	})
	t.Run("make", func(t *testing.T) {
		r := same(t, dir, nil, "", need(t, "make"), "-s", "-C", dir)
		if len(r.traces) < 5 {
			t.Errorf("make runs several commands: want ≥ 5 traces, got %d", len(r.traces))
		}
	})
}
