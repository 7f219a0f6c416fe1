package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// runTimeout bounds a single measured command so a hung tool fails the row
// instead of the whole benchmark.
const runTimeout = 3 * time.Minute

type result struct {
	wall   time.Duration
	maxRSS int64 // bytes
	stdout string
}

// tailWriter keeps the last bytes written: valgrind and LeakSanitizer write
// long reports, and only the end matters when a run fails.
type tailWriter struct {
	buf []byte
	max int
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// cleanEnv is the harness's environment without anything that would change
// how a measured program allocates or is traced.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD", k == "LSAN_OPTIONS", k == "ASAN_OPTIONS", k == "VALGRIND_OPTS",
			k == "MALLOC_TRACE", strings.HasPrefix(k, "LEAK_"), strings.HasPrefix(k, "GLIBC_TUNABLES"),
			strings.HasPrefix(k, "MALLOC_"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

// runnerSource is compiled next to alloc_bench and starts every measured
// command. Peak RSS cannot come from the harness's own wait4: a child forked
// from a Go process starts with the harness's memory high-water mark (the
// kernel carries the old address space's peak across exec), so a small
// program would report the harness's size. The runner is a few hundred
// kilobytes of C, below anything it measures. It forks, sets the
// NAME=VALUE pairs in the child only (a preloaded tracer must not load into
// the runner and raise the very mark it is there to keep low), execs,
// wait4s and writes the child's wall time and ru_maxrss to RESULT.
const runnerSource = `#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int cmd = 2;
	while (cmd < argc && strcmp(argv[cmd], "--") != 0)
		cmd++;
	if (cmd + 1 >= argc) {
		fprintf(stderr, "usage: runner RESULT [NAME=VALUE...] -- PROGRAM [ARGS...]\n");
		return 127;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 127;
	}
	if (pid == 0) {
		for (int i = 2; i < cmd; i++)
			putenv(argv[i]);
		execvp(argv[cmd + 1], argv + cmd + 1);
		perror(argv[cmd + 1]);
		_exit(127);
	}
	int status;
	struct rusage ru;
	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR) {
			perror("wait4");
			return 127;
		}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	FILE *f = fopen(argv[1], "w");
	if (f == NULL || fprintf(f, "wall_ns=%lld maxrss_kb=%ld\n", ns, ru.ru_maxrss) < 0 || fclose(f) != 0) {
		perror(argv[1]);
		return 127;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}
`

// buildRunner compiles runnerSource into dir.
func buildRunner(dir string) (string, error) {
	src := filepath.Join(dir, "runner.c")
	bin := filepath.Join(dir, "runner")
	if err := os.WriteFile(src, []byte(runnerSource), 0o644); err != nil {
		return "", err
	}
	if b, err := exec.Command("gcc", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc runner.c: %v\n%s", err, b)
	}
	return bin, nil
}

// parseRunnerResult reads the runner's result line.
func parseRunnerResult(s string) (wall time.Duration, maxRSS int64, err error) {
	var ns, kb int64
	if _, err := fmt.Sscanf(strings.TrimSpace(s), "wall_ns=%d maxrss_kb=%d", &ns, &kb); err != nil {
		return 0, 0, fmt.Errorf("runner result %q: %v", s, err)
	}
	return time.Duration(ns), kb << 10, nil
}

// run executes argv with the extra NAME=VALUE environment through the
// runner and returns its wall time and peak
// RSS. The peak is wait4's ru_maxrss, which for a process that waits for
// its own children (the heaptrack script waits for heaptrack_interpret) is
// the largest single process of the tree, not their sum. stdout goes to out
// when given, otherwise it is captured.
func (h *harness) run(argv, extraEnv []string, out io.Writer) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	resultFile := filepath.Join(h.work, "runner.result")
	os.Remove(resultFile)
	args := append(append(append([]string{resultFile}, extraEnv...), "--"), argv...)
	cmd := exec.CommandContext(ctx, h.runner, args...)
	cmd.Env = cleanEnv()
	// A group of its own, so a timeout also ends the children a tool
	// started (heaptrack's interpreter and compressor).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout bytes.Buffer
	if out != nil {
		cmd.Stdout = out
	} else {
		cmd.Stdout = &stdout
	}
	stderr := &tailWriter{max: 2048}
	cmd.Stderr = stderr
	err := cmd.Run()
	r := result{stdout: stdout.String()}
	if err != nil {
		tail := strings.TrimSpace(string(stderr.buf))
		if i := strings.LastIndexByte(tail, '\n'); i >= 0 && len(tail)-i < 200 {
			// The last line usually names the failure; keep the error short.
			tail = tail[i+1:]
		}
		return r, fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, tail)
	}
	b, err := os.ReadFile(resultFile)
	if err != nil {
		return r, err
	}
	r.wall, r.maxRSS, err = parseRunnerResult(string(b))
	return r, err
}

// treeBytes sums the sizes of the files in dir whose names match pattern.
func treeBytes(dir, pattern string) (int64, int, error) {
	names, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for _, n := range names {
		st, err := os.Stat(n)
		if err != nil {
			return 0, 0, err
		}
		total += st.Size()
	}
	return total, len(names), nil
}

// firstLine runs a command for its version banner; missing tools give "".
func firstLine(argv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(b) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(line)
}
