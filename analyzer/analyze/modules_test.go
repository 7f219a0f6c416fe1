package analyze_test

import (
	"debug/elf"
	"encoding/hex"
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/symbolize"
	"libleak/internal/testutil"
)

// elfBuildID reads the GNU build ID note of the file at path.
func elfBuildID(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		t.Skipf("%s has no build ID note (the linker was not asked for one)", path)
	}
	b, err := s.Data()
	if err != nil || len(b) < 16 {
		t.Fatalf("%s: build ID note: %v", path, err)
	}
	// namesz, descsz, type, "GNU\0", then the ID.
	descsz := f.ByteOrder.Uint32(b[4:8])
	return hex.EncodeToString(b[16 : 16+descsz])
}

// The report names, for the modules its frames come from and only those,
// the build ID each had when the process ran.
func TestReportModulesCarryBuildIDs(t *testing.T) {
	bin := testutil.Program(t, "reach.c")
	sym := symbolize.New(symbolize.Options{})
	rep, err := analyze.Run([]string{trace(t, "reach.c")}, analyze.Options{
		Symbolizer: func(m []event.Module) analyze.FrameSource { return sym.Process(m) },
	})
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, l := range rep.Leaks {
		for _, f := range l.Frames {
			named[f.Module] = true
		}
	}
	got := map[string]string{}
	for _, m := range rep.Modules {
		if !named[m.Path] {
			t.Errorf("module %s is listed but no frame names it", m.Path)
		}
		if got[m.Path] != "" {
			t.Errorf("module %s listed twice", m.Path)
		}
		got[m.Path] = m.BuildID
	}
	if want := elfBuildID(t, bin); got[bin] != want {
		t.Errorf("build ID of %s: %q, want %q (modules %v)", bin, got[bin], want, rep.Modules)
	}
}
