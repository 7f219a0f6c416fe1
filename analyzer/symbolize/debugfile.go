package symbolize

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// findDebugFile looks for a separate debug file: by build ID under the
// debug roots, then by the object's .gnu_debuglink next to it, in its
// .debug directory and under the debug roots. A candidate is used only
// when its build ID equals want and, found by debug link, its CRC matches.
// note explains candidates that were rejected when none was used.
func (o *object) findDebugFile(mainFile *elf.File, host string, want []byte) (dbg *elf.File, path, note string) {
	var rejected []string
	try := func(path string, crc *uint32) *elf.File {
		st, err := os.Stat(path)
		if err != nil || !st.Mode().IsRegular() {
			return nil
		}
		if same, err := os.Stat(host); err == nil && os.SameFile(st, same) {
			return nil
		}
		f, err := elf.Open(path)
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("%s: %v", path, err))
			return nil
		}
		if crc != nil {
			got, err := fileCRC(path)
			if err != nil || got != *crc {
				f.Close()
				rejected = append(rejected, fmt.Sprintf("%s: CRC %08x does not match debug link CRC %08x", path, got, *crc))
				return nil
			}
		}
		if id := buildID(f); len(want) > 0 && !bytes.Equal(id, want) && (crc == nil || len(id) > 0) {
			f.Close()
			rejected = append(rejected, fmt.Sprintf("%s: build ID %s, want %s", path, hexOrNone(id), hex.EncodeToString(want)))
			return nil
		}
		if !hasDWARF(f) {
			if _, err := f.Symbols(); err != nil {
				f.Close()
				return nil
			}
		}
		return f
	}
	defer func() {
		if dbg == nil && len(rejected) > 0 {
			note = "debug file rejected: " + strings.Join(rejected, "; ")
		}
	}()

	roots := o.s.debugRoots()
	if len(want) > 1 {
		h := hex.EncodeToString(want)
		for _, r := range roots {
			p := filepath.Join(r, ".build-id", h[:2], h[2:]+".debug")
			if f := try(p, nil); f != nil {
				return f, p, ""
			}
		}
	}
	if mainFile == nil {
		return nil, "", ""
	}
	link, crc, ok := debugLink(mainFile)
	if !ok {
		return nil, "", ""
	}
	dir := filepath.Dir(host)
	cands := []string{filepath.Join(dir, link), filepath.Join(dir, ".debug", link)}
	for _, r := range roots {
		cands = append(cands, filepath.Join(r, filepath.Dir(o.path), link))
	}
	for _, c := range cands {
		if f := try(c, &crc); f != nil {
			return f, c, ""
		}
	}
	return nil, "", ""
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

// buildID returns the NT_GNU_BUILD_ID note of f, or nil.
func buildID(f *elf.File) []byte {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		if id := gnuBuildID(data, f.ByteOrder); id != nil {
			return id
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := gnuBuildID(data, f.ByteOrder); id != nil {
			return id
		}
	}
	return nil
}

func gnuBuildID(b []byte, bo binary.ByteOrder) []byte {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:])), bo.Uint32(b[8:])
		b = b[12:]
		if align(namesz) > uint64(len(b)) || align(namesz)+descsz > uint64(len(b)) {
			return nil
		}
		name := b[:namesz]
		desc := b[align(namesz) : align(namesz)+descsz]
		if typ == 3 && string(name) == "GNU\x00" && len(desc) > 0 {
			return append([]byte(nil), desc...)
		}
		next := align(namesz) + align(descsz)
		if next > uint64(len(b)) {
			return nil
		}
		b = b[next:]
	}
	return nil
}

// debugLink returns the file name and CRC of f's .gnu_debuglink.
func debugLink(f *elf.File) (string, uint32, bool) {
	s := f.Section(".gnu_debuglink")
	if s == nil {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	n := bytes.IndexByte(data, 0)
	if n <= 0 {
		return "", 0, false
	}
	off := (n + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, false
	}
	name := string(data[:n])
	if strings.ContainsRune(name, '/') {
		name = filepath.Base(name)
	}
	return name, f.ByteOrder.Uint32(data[off:]), true
}

func fileCRC(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, f); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}
