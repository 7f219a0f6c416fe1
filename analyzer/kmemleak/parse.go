// Package kmemleak reads the kernel's kmemleak reports, from
// /sys/kernel/debug/kmemleak, dmesg, or syzbot logs of any kernel era, and
// groups the unreferenced objects by the code that allocated them.
package kmemleak

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Object is one unreferenced object of a report.
type Object struct {
	// Kind is "" for ordinary objects, "phys" or "percpu" for the objects
	// kmemleak tracks by physical address or per cpu.
	Kind    string
	Address uint64
	Size    uint64
	Comm    string
	Pid     int
	Jiffies uint64
	// Age in seconds, or -1 when the kernel did not print it (6.8+).
	Age float64
	// CRC is the checksum of the object's contents (6.8+), kept only to
	// be shown: the same stack leaks with many different contents.
	CRC    string
	Frames []Frame
	// Line is where the object's header is in the input, from 1.
	Line int
}

// Frame is one line of an object's backtrace.
type Frame struct {
	// Address is the printed return address: real, hashed (4.15+) or
	// zero (kptr_restrict); HasAddress is false on late-2024 kernels,
	// which print none.
	Address    uint64
	HasAddress bool
	// Function is the symbol as printed, compiler suffixes included;
	// empty when the kernel could not name the address.
	Function string
	Offset   uint64
	Length   uint64
	Module   string
	File     string
	FileLine int
	Inline   bool
}

// ParseError is input that claims to be a kmemleak report but is not one.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

var (
	// Whatever a log adds in front of a kernel line: printk level, syslog
	// or journal prefix, timestamp, syzbot's caller id, kmemleak's pr_fmt.
	prefixRe = regexp.MustCompile(`^(?:<\d+>)?` +
		`(?:(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) \S+ kernel: )?` +
		`(?:\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ?)?` +
		`(?:kmemleak: )?`)
	headerRe = regexp.MustCompile(`^\s*unreferenced object (?:\((phys|percpu)\) )?0x([0-9a-fA-F]+) \(size (\d+)\):?\s*$`)
	commRe   = regexp.MustCompile(`^\s+comm "(.*)", pid (\d+), jiffies (\d+)(?: \(age (\d+(?:\.\d+)?)s\))?\s*$`)
	hexRe    = regexp.MustCompile(`^\s+hex dump \(first \d+ bytes(?: on cpu \d+)?\):\s*$`)
	btRe     = regexp.MustCompile(`^\s+backtrace(?: \(crc ([0-9a-fA-F]+)\))?:\s*$`)
	addrRe   = regexp.MustCompile(`^\[<([0-9a-fA-F]+)>\]\s*`)
	symRe    = regexp.MustCompile(`^([^\s+\[\]]+?)(?:\+0x([0-9a-fA-F]+)(?:/0x([0-9a-fA-F]+))?)?$`)
	rawRe    = regexp.MustCompile(`^0x([0-9a-fA-F]+)$`)
	fileRe   = regexp.MustCompile(`^(\S+):(\d+)$`)
	modRe    = regexp.MustCompile(`^\[([\w-]+)\]$`)
)

// Parse reads every object of a report. Lines that belong to no object
// (the rest of a dmesg, syzbot's "BUG: memory leak") are skipped, so an
// input without objects is an empty report; a line that starts an object
// but does not parse is an error.
func Parse(r io.Reader) ([]Object, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var (
		objs   []Object
		cur    *Object
		inBT   bool
		lineNo int
	)
	flush := func() {
		if cur != nil {
			objs = append(objs, *cur)
		}
		cur, inBT = nil, false
	}
	for sc.Scan() {
		lineNo++
		raw := sc.Bytes()
		if bytes.IndexByte(raw, 0) >= 0 {
			return nil, &ParseError{lineNo, "binary data, not a kmemleak report"}
		}
		line := strings.TrimRight(string(raw), "\r")
		line = line[len(prefixRe.FindString(line)):]

		if strings.Contains(line, "unreferenced object") {
			m := headerRe.FindStringSubmatch(line)
			if m == nil {
				return nil, &ParseError{lineNo, fmt.Sprintf("malformed object header %q", strings.TrimSpace(line))}
			}
			flush()
			addr, err1 := strconv.ParseUint(m[2], 16, 64)
			size, err2 := strconv.ParseUint(m[3], 10, 64)
			if err1 != nil || err2 != nil {
				return nil, &ParseError{lineNo, fmt.Sprintf("malformed object header %q", strings.TrimSpace(line))}
			}
			cur = &Object{Kind: m[1], Address: addr, Size: size, Age: -1, Pid: -1, Line: lineNo}
			continue
		}
		if cur == nil {
			continue
		}
		// Every line of an object is indented; anything else ends it.
		if line == "" || (line[0] != ' ' && line[0] != '\t') {
			flush()
			continue
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, `comm "`):
			m := commRe.FindStringSubmatch(line)
			if m == nil {
				return nil, &ParseError{lineNo, fmt.Sprintf("malformed comm line %q", trimmed)}
			}
			cur.Comm = m[1]
			cur.Pid, _ = strconv.Atoi(m[2])
			cur.Jiffies, _ = strconv.ParseUint(m[3], 10, 64)
			if m[4] != "" {
				cur.Age, _ = strconv.ParseFloat(m[4], 64)
			}
			inBT = false
		case hexRe.MatchString(line):
			inBT = false
		case btRe.MatchString(line):
			cur.CRC = btRe.FindStringSubmatch(line)[1]
			inBT = true
		case inBT:
			f, ok, terminator := parseFrame(trimmed)
			switch {
			case terminator:
			case ok:
				cur.Frames = append(cur.Frames, f)
			default:
				return nil, &ParseError{lineNo, fmt.Sprintf("malformed backtrace frame %q", trimmed)}
			}
		default:
			// Hex dump bytes, or a line of a format to come: skip it.
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &ParseError{lineNo + 1, "line longer than 1 MiB, not a kmemleak report"}
		}
		return nil, err
	}
	flush()
	return objs, nil
}

// parseFrame reads one backtrace line without its indentation. terminator
// reports the all-ones end marker old kernels print after the last frame.
func parseFrame(s string) (f Frame, ok, terminator bool) {
	if m := addrRe.FindStringSubmatch(s); m != nil {
		a, err := strconv.ParseUint(m[1], 16, 64)
		if err != nil {
			return f, false, false
		}
		f.Address, f.HasAddress = a, true
		s = s[len(m[0]):]
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return f, false, false
	}
	if m := rawRe.FindStringSubmatch(fields[0]); m != nil {
		a, err := strconv.ParseUint(m[1], 16, 64)
		if err != nil {
			return f, false, false
		}
		if strings.Trim(m[1], "fF") == "" {
			return f, false, true
		}
		if !f.HasAddress {
			f.Address, f.HasAddress = a, true
		}
	} else if m := symRe.FindStringSubmatch(fields[0]); m != nil {
		f.Function = m[1]
		if m[2] != "" {
			f.Offset, _ = strconv.ParseUint(m[2], 16, 64)
			if m[3] != "" {
				f.Length, _ = strconv.ParseUint(m[3], 16, 64)
			}
		}
	} else {
		return f, false, false
	}
	for _, tok := range fields[1:] {
		switch m := modRe.FindStringSubmatch(tok); {
		case tok == "[inline]":
			f.Inline = true
		case m != nil:
			f.Module = m[1]
		default:
			if fm := fileRe.FindStringSubmatch(tok); fm != nil {
				f.File = fm[1]
				f.FileLine, _ = strconv.Atoi(fm[2])
			}
		}
	}
	return f, true, false
}
