package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// machine describes where the numbers came from; slowdowns depend on the
// CPU, the kernel and glibc's allocator as much as on libleak.
func (h *harness) machine(loadBefore, loadAfter string) string {
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	model, procs := "unknown", 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		var m string
		m, procs = parseCPUModel(string(b))
		model = orUnknown(m)
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if n, ok := parseMemTotal(string(b)); ok {
			mem = fmtBytes(n)
		}
	}
	pkg := func(name string) string {
		return firstLine("dpkg-query", "-W", "-f", "${Version}", name)
	}
	peers := []string{}
	add := func(name, version string) {
		if version != "" {
			peers = append(peers, name+" "+version)
		} else {
			peers = append(peers, name+" not installed")
		}
	}
	add("heaptrack", strings.TrimPrefix(firstLine("heaptrack", "--version"), "heaptrack "))
	add("valgrind", strings.TrimPrefix(firstLine("valgrind", "--version"), "valgrind-"))
	add("liblsan0", pkg("liblsan0"))
	add("libunwind8", pkg("libunwind8"))

	shimBuilt := "unknown"
	if st, err := os.Stat(h.shim); err == nil {
		shimBuilt = st.ModTime().UTC().Format(time.DateTime) + " UTC"
	}
	shimSum := "unknown"
	if b, err := os.ReadFile(h.shim); err == nil {
		shimSum = fmt.Sprintf("%x", sha256.Sum256(b))[:12]
	}
	// rev-parse only reads; the tree may hold uncommitted work, hence the
	// build time next to it.
	commit := orUnknown(firstLine("git", "-C", h.root, "rev-parse", "--short", "HEAD"))

	var b strings.Builder
	b.WriteString("### Machine\n\n")
	fmt.Fprintf(&b, "- CPU: %s\n", model)
	fmt.Fprintf(&b, "- cores: %d logical (Go sees %d)\n", procs, runtime.NumCPU())
	fmt.Fprintf(&b, "- memory: %s\n", mem)
	fmt.Fprintf(&b, "- kernel: %s\n", orUnknown(firstLine("uname", "-srm")))
	fmt.Fprintf(&b, "- glibc: %s\n", orUnknown(firstLine("ldd", "--version")))
	fmt.Fprintf(&b, "- gcc: %s\n", orUnknown(firstLine("gcc", "--version")))
	fmt.Fprintf(&b, "- Go: %s\n", runtime.Version())
	fmt.Fprintf(&b, "- peers: %s\n", strings.Join(peers, ", "))
	fmt.Fprintf(&b, "- libleak: commit %s (plus any uncommitted changes), build/libleak.so built %s, sha256 %s…\n",
		commit, shimBuilt, shimSum)
	fmt.Fprintf(&b, "- load average (1/5/15 min) before: %s, after: %s\n\n", loadBefore, loadAfter)
	return b.String()
}
