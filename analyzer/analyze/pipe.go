package analyze

import "libleak/analyzer/event"

// pipe runs the replay on its own goroutine: decoding (decompression and
// varints) and replay (table lookups) take about equal time, so on two
// cores a trace is read in less time. A batch carries events in one slice
// and the rare other records beside them, each with the number of events
// that came before it, so order is kept and pushing an event is one copy.
type pipe struct {
	h    event.Handler
	cur  *batch
	ch   chan *batch
	free chan *batch
	done chan struct{}
}

type batch struct {
	evs []event.Event
	ctl []ctl
}

type ctl struct {
	at   int   // events of the batch before this record
	kind uint8 // 1 stack, 2 module, 3 header, 4 scan
	id   uint64
	pcs  []uint64
	mod  *event.Module
	hdr  *event.Header
	scan *event.Scan
}

const pipeBatch = 8192

func newPipe(h event.Handler) *pipe {
	p := &pipe{h: h, ch: make(chan *batch, 4), free: make(chan *batch, 6), done: make(chan struct{})}
	bh, _ := h.(event.BatchHandler)
	go func() {
		for b := range p.ch {
			i := 0
			for c := range b.ctl {
				p.events(bh, b.evs[i:b.ctl[c].at])
				i = b.ctl[c].at
				p.control(&b.ctl[c])
			}
			p.events(bh, b.evs[i:])
			b.evs, b.ctl = b.evs[:0], b.ctl[:0]
			select {
			case p.free <- b:
			default:
			}
		}
		close(p.done)
	}()
	p.cur = &batch{evs: make([]event.Event, 0, pipeBatch)}
	return p
}

func (p *pipe) events(bh event.BatchHandler, evs []event.Event) {
	if bh != nil {
		bh.EventBatch(evs)
		return
	}
	for i := range evs {
		p.h.Event(&evs[i])
	}
}

func (p *pipe) control(c *ctl) {
	switch c.kind {
	case 1:
		p.h.Stack(c.id, c.pcs)
	case 2:
		p.h.Module(c.mod)
	case 3:
		p.h.Header(c.hdr)
	case 4:
		if sh, ok := p.h.(event.ScanHandler); ok {
			sh.Scan(c.scan)
		}
	}
	*c = ctl{}
}

func (p *pipe) flush() {
	if len(p.cur.evs) == 0 && len(p.cur.ctl) == 0 {
		return
	}
	p.ch <- p.cur
	select {
	case p.cur = <-p.free:
	default:
		p.cur = &batch{evs: make([]event.Event, 0, pipeBatch)}
	}
}

// close waits until the replay has taken everything.
func (p *pipe) close() {
	p.flush()
	close(p.ch)
	<-p.done
}

func (p *pipe) Event(e *event.Event) {
	p.cur.evs = append(p.cur.evs, *e)
	if len(p.cur.evs) == pipeBatch {
		p.flush()
	}
}

// EventBatch copies a run of events into the batches: one copy per run
// instead of a call and a copy per event.
func (p *pipe) EventBatch(evs []event.Event) {
	for len(evs) > 0 {
		b := p.cur
		n := copy(b.evs[len(b.evs):cap(b.evs)], evs)
		b.evs = b.evs[:len(b.evs)+n]
		evs = evs[n:]
		if len(b.evs) == cap(b.evs) {
			p.flush()
		}
	}
}

func (p *pipe) push(c ctl) {
	c.at = len(p.cur.evs)
	p.cur.ctl = append(p.cur.ctl, c)
}

func (p *pipe) Stack(id uint64, pcs []uint64) {
	p.push(ctl{kind: 1, id: id, pcs: append([]uint64(nil), pcs...)})
}
func (p *pipe) Module(m *event.Module) { p.push(ctl{kind: 2, mod: m}) }
func (p *pipe) Header(h *event.Header) {
	c := *h
	p.push(ctl{kind: 3, hdr: &c})
}
func (p *pipe) Scan(s *event.Scan) { p.push(ctl{kind: 4, scan: s}) }
