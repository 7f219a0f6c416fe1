package symbolize

import (
	"debug/dwarf"
	"debug/elf"
	"io"
	"testing"
)

func TestZZDebug(t *testing.T) {
	f, _ := elf.Open("/tmp/compile-dwarf")
	d, _ := f.DWARF()
	r := d.Reader()
	cu, err := r.SeekPC(0xe02a63)
	t.Log(cu, err)
	lr, _ := d.LineReader(cu)
	var le dwarf.LineEntry
	for {
		if err := lr.Next(&le); err == io.EOF {
			break
		}
		if le.Address >= 0xe02a00 && le.Address < 0xe02b00 || le.EndSequence {
			t.Logf("%#x %v %d end=%v stmt=%v", le.Address, le.File, le.Line, le.EndSequence, le.IsStmt)
		}
	}
}
