// Package testutil builds the C and C++ test programs for tests, so every
// package's tests can run a real program without depending on make.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var mu sync.Mutex

// Root returns the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildDir is where test binaries are cached between test runs.
func BuildDir() string {
	return filepath.Join(Root(), "build", "testprogs")
}

// Program compiles testprogs/<src> (a .c or .cc file) with debug info and
// frame pointers into build/testprogs and returns the binary's path. A
// binary newer than its source is reused. Extra arguments go to the
// compiler (for example "-pthread" or "-ldl").
func Program(t testing.TB, src string, extra ...string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	in := filepath.Join(Root(), "testprogs", src)
	name := strings.TrimSuffix(strings.TrimSuffix(src, ".cc"), ".c")
	out := filepath.Join(BuildDir(), name)
	if newer(out, in) {
		return out
	}
	if err := os.MkdirAll(BuildDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	cc := "gcc"
	if strings.HasSuffix(src, ".cc") {
		cc = "g++"
	}
	// Packages test in parallel processes: build to a private name and
	// rename, so no test ever runs a half-written binary.
	tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
	args := append([]string{"-g", "-O0", "-fno-omit-frame-pointer", "-o", tmp, in, "-pthread", "-ldl"}, extra...)
	cmd := exec.Command(cc, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func newer(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && !sa.ModTime().Before(sb.ModTime())
}

var shimOnce sync.Once
var shimPath string
var shimErr error

// Shim returns the path of build/libleak.so, building it first when it is
// missing or older than a source file of shim/.
func Shim(t testing.TB) string {
	t.Helper()
	shimOnce.Do(func() {
		root := Root()
		out := filepath.Join(root, "build", "libleak.so")
		srcs, _ := filepath.Glob(filepath.Join(root, "shim", "*"))
		fresh := true
		for _, s := range srcs {
			if !newer(out, s) {
				fresh = false
			}
		}
		shimPath = out
		if fresh {
			return
		}
		tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", tmp, "./shim")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			shimErr = fmt.Errorf("building libleak.so: %v\n%s", err, b)
			return
		}
		os.Remove(strings.TrimSuffix(tmp, ".so") + ".h")
		os.Remove(tmp[:len(tmp)-len(filepath.Ext(tmp))] + ".h")
		shimErr = os.Rename(tmp, out)
	})
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	return shimPath
}
