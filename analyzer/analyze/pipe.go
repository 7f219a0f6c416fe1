package analyze

import "libleak/analyzer/event"

// pipe runs the replay on its own goroutine: decoding (decompression and
// varints) and replay (table lookups) take about equal time, so on two
// cores a trace is read in about half the time. Items keep their order.
type pipe struct {
	h     event.Handler
	batch []item
	ch    chan []item
	free  chan []item
	done  chan struct{}
}

type item struct {
	ev   event.Event
	kind uint8 // 0 event, 1 stack, 2 module, 3 header, 4 scan
	pcs  []uint64
	mod  *event.Module
	hdr  event.Header
	scan *event.Scan
}

const pipeBatch = 4096

func newPipe(h event.Handler) *pipe {
	p := &pipe{h: h, ch: make(chan []item, 4), free: make(chan []item, 6), done: make(chan struct{})}
	go func() {
		for b := range p.ch {
			for i := range b {
				it := &b[i]
				switch it.kind {
				case 0:
					h.Event(&it.ev)
				case 1:
					h.Stack(it.ev.Stack, it.pcs)
				case 2:
					h.Module(it.mod)
				case 3:
					h.Header(&it.hdr)
				case 4:
					if sh, ok := h.(event.ScanHandler); ok {
						sh.Scan(it.scan)
					}
				}
				it.pcs, it.mod, it.scan = nil, nil, nil
			}
			select {
			case p.free <- b[:0]:
			default:
			}
		}
		close(p.done)
	}()
	p.batch = make([]item, 0, pipeBatch)
	return p
}

func (p *pipe) push(it item) {
	p.batch = append(p.batch, it)
	if len(p.batch) == pipeBatch {
		p.flush()
	}
}

func (p *pipe) flush() {
	if len(p.batch) == 0 {
		return
	}
	p.ch <- p.batch
	select {
	case b := <-p.free:
		p.batch = b
	default:
		p.batch = make([]item, 0, pipeBatch)
	}
}

// close waits until the replay has taken everything.
func (p *pipe) close() {
	p.flush()
	close(p.ch)
	<-p.done
}

func (p *pipe) Event(e *event.Event) { p.push(item{ev: *e}) }
func (p *pipe) Stack(id uint64, pcs []uint64) {
	p.push(item{kind: 1, ev: event.Event{Stack: id}, pcs: append([]uint64(nil), pcs...)})
}
func (p *pipe) Module(m *event.Module) { p.push(item{kind: 2, mod: m}) }
func (p *pipe) Header(h *event.Header) { p.push(item{kind: 3, hdr: *h}) }
func (p *pipe) Scan(s *event.Scan)     { p.push(item{kind: 4, scan: s}) }
