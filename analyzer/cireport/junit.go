package cireport

import (
	"encoding/xml"
	"fmt"
	"io"
	"path"

	"libleak/analyzer/report"
)

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Classname string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes one test suite named suiteName: a passing test case per
// traced process, holding its facts in system-out, and a failing one per
// leak site, named "leak in FUNCTION (FILE:LINE)" after the frame the leak
// is placed at. The class name is the base name of the process's
// executable, so CI servers group leaks by program. Names carry no pid, so
// a leak keeps its name from one run to the next; a name repeated within a
// class gets " #2", " #3", ... in report order.
func WriteJUnit(w io.Writer, r *report.Report, suiteName string) error {
	suite := junitSuite{Name: suiteName}
	procs := processes(r)
	byPid := map[int][]*report.Leak{}
	var orphans []*report.Leak
	for _, l := range leaks(r) {
		if procs[l.Pid] != nil {
			byPid[l.Pid] = append(byPid[l.Pid], l)
		} else {
			orphans = append(orphans, l)
		}
	}
	used := map[[2]string]int{}
	unique := func(class, name string) string {
		k := [2]string{class, name}
		used[k]++
		if n := used[k]; n > 1 {
			return fmt.Sprintf("%s #%d", name, n)
		}
		return name
	}
	addLeak := func(class, exe string, l *report.Leak) {
		suite.Cases = append(suite.Cases, junitCase{
			Classname: class,
			Name:      unique(class, junitName(l)),
			Time:      "0",
			Failure: &junitFailure{
				Message: junitMessage(l),
				Type:    l.Kind,
				Text:    summary(l, exe) + "\n" + stackText(l) + "\n",
			},
		})
		suite.Failures++
	}
	var total float64
	if r != nil {
		for i := range r.Processes {
			p := &r.Processes[i]
			class := className(p.Exe)
			secs := float64(p.DurationNs) / 1e9
			total += secs
			suite.Cases = append(suite.Cases, junitCase{
				Classname: class,
				Name:      unique(class, "process"),
				Time:      fmt.Sprintf("%.3f", secs),
				SystemOut: processFacts(p),
			})
			for _, l := range byPid[p.Pid] {
				addLeak(class, p.Exe, l)
			}
		}
	}
	for _, l := range orphans {
		addLeak("unknown-process", "", l)
	}
	suite.Tests = len(suite.Cases)
	suite.Time = fmt.Sprintf("%.3f", total)
	doc := junitSuites{Name: suiteName, Tests: suite.Tests, Failures: suite.Failures,
		Time: suite.Time, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func className(exe string) string {
	if exe == "" {
		return "unknown-process"
	}
	return path.Base(exe)
}

func junitName(l *report.Leak) string {
	i := siteFrame(l, "")
	if i >= 0 {
		f := &l.Frames[i]
		where := path.Base(f.File)
		if f.Line > 0 {
			where = fmt.Sprintf("%s:%d", where, f.Line)
		}
		return fmt.Sprintf("leak in %s (%s)", functionName(f), where)
	}
	if len(l.Frames) == 0 {
		return "leak at an unknown site"
	}
	f := &l.Frames[0]
	if f.Module != "" {
		return fmt.Sprintf("leak in %s (%s)", functionName(f), path.Base(f.Module))
	}
	return fmt.Sprintf("leak in %s", functionName(f))
}

func junitMessage(l *report.Leak) string {
	return fmt.Sprintf("%s leak: %s in %s", l.Kind, plural(l.Bytes, "byte", "bytes"), plural(l.Blocks, "block", "blocks"))
}

func processFacts(p *report.Process) string {
	s := fmt.Sprintf("pid %d (parent %d): %s\n", p.Pid, p.Ppid, p.Exe)
	if p.Signal != "" {
		s += "killed by " + p.Signal
	} else if p.ExitStatus >= 0 {
		s += fmt.Sprintf("exit status %d", p.ExitStatus)
	} else {
		s += "no exit recorded (killed or trace truncated)"
	}
	s += fmt.Sprintf(", %d events, peak %d bytes\n", p.Events, p.PeakBytes)
	if p.Truncated || p.Dropped > 0 {
		s += fmt.Sprintf("trace incomplete: %d events dropped, truncated %v; leaks may be missing\n", p.Dropped, p.Truncated)
	}
	return s
}
