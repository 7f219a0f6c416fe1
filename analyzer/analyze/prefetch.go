package analyze

import (
	"libleak/analyzer/event"
	"libleak/analyzer/replay"
)

// Naming a report's frames comes after the whole trace is replayed: only
// then is it known what leaked. Most of that time is reading debug
// information, and nearly every stack of a process ends in the same few
// modules (the executable; libc, whose start routines begin every
// thread), so what they need is needed whatever leaked: libc's debug
// file alone is tens of MiB to inflate and parse. While a long trace is
// decoded, a prefetcher starts reading a module's as soon as a stack uses
// it; the report is the same, ready sooner, and the process holds that
// debug information while it decodes instead of after (a higher peak).
var prefetchMinSize int64 = 4 << 20 // bytes of trace: shorter ones decode in tens of ms

const prefetchMax = 8 // modules: a process with many usually leaks from few

// prefetcher is the replay's handler, with a look at each stack.
type prefetcher struct {
	*replay.Replay
	fetch   func(event.Module)
	tracer  string
	started map[*event.Module]bool
	last    *event.Module // the previous frame's module
}

func newPrefetcher(r *replay.Replay, fetch func(event.Module)) *prefetcher {
	return &prefetcher{Replay: r, fetch: fetch, started: map[*event.Module]bool{}}
}

func (p *prefetcher) Header(h *event.Header) {
	p.tracer = h.Tracer
	p.Replay.Header(h)
}

func (p *prefetcher) Stack(id uint64, pcs []uint64) {
	p.Replay.Stack(id, pcs)
	for _, pc := range pcs {
		if len(p.started) >= prefetchMax {
			return
		}
		m := p.module(pc)
		// The tracer's own frames are dropped before naming (Add).
		if m == nil || p.started[m] || m.Path == p.tracer {
			continue
		}
		p.started[m] = true
		p.fetch(*m)
	}
}

// module finds the loaded module holding return address pc, nil if none.
func (p *prefetcher) module(pc uint64) *event.Module {
	if pc > 0 {
		pc-- // the call is before it
	}
	if p.last != nil && holds(p.last, pc) {
		return p.last
	}
	for _, m := range p.Modules {
		if m.Unloaded == 0 && holds(m, pc) {
			p.last = m
			return m
		}
	}
	return nil
}

func holds(m *event.Module, pc uint64) bool {
	for _, s := range m.Segments {
		if s.Start <= pc && pc < s.End {
			return true
		}
	}
	return false
}
