package replay

import "libleak/analyzer/event"

// blockTable maps addresses to live blocks: open addressing with linear
// probing. The replay does one lookup and one insert or delete per event,
// which makes this its hottest structure; Go's map costs about twice as
// much here. A slot holds its key and its block together, in 40 bytes: a
// lookup, which mostly misses the cache, then touches one line rather than
// one in a key array and one in a value array.
//
// A free leaves its block's slot dead, address kept, rather than closing
// the gap (which reads the slots after it, most often on another line):
// allocators hand freed addresses out again soon, and an allocation at an
// address with a dead slot takes that slot back. Dead slots are dropped
// when the table is rebuilt, which happens when live and dead slots fill
// half of it; it doubles then only if the live ones fill more than a
// quarter, so its size follows the live blocks (at most 8 slots per live
// block), and a rebuild, which visits every slot, comes after at least a
// quarter of the slots were newly taken.
type blockTable struct {
	ents []ent
	n    int // live slots
	used int // live and dead slots
	mask uint64
}

// ent is a heap block in the table (heap blocks carry no mmap flags).
// addr 0 marks an empty slot: address 0 is never a block.
type ent struct {
	addr, size, time, stack uint64
	tid                     uint32
	op                      event.Op
	dead                    bool
}

func toEnt(b *Block) ent {
	return ent{addr: b.Addr, size: b.Size, time: b.Time, stack: b.Stack, tid: b.Tid, op: b.Op}
}

func (e *ent) block() Block {
	return Block{Addr: e.addr, Size: e.size, Time: e.time, Stack: e.stack, Op: e.op, Tid: e.tid}
}

func (t *blockTable) init(size int) {
	c := 1024
	for c < size*2 {
		c *= 2
	}
	t.ents = make([]ent, c)
	t.mask = uint64(c - 1)
	t.n, t.used = 0, 0
}

func hashAddr(a uint64) uint64 { return (a >> 4) * 0x9e3779b97f4a7c15 >> 20 }

// find returns the slot holding a live block at a; or, with found false,
// the slot a block at a goes in: a's dead slot, or an empty one. An
// address has at most one slot, live or dead.
func (t *blockTable) find(a uint64) (i uint64, found bool) {
	for i = hashAddr(a) & t.mask; ; i = (i + 1) & t.mask {
		switch t.ents[i].addr {
		case a:
			return i, !t.ents[i].dead
		case 0:
			return i, false
		}
	}
}

// insertAt puts a new block into the slot find returned for its address;
// it reports false when the table must be rebuilt first (put then).
func (t *blockTable) insertAt(i uint64, e ent) bool {
	if t.ents[i].addr == 0 {
		if (t.used+1)*2 > len(t.ents) {
			return false
		}
		t.used++
	}
	t.ents[i] = e
	t.n++
	return true
}

func (t *blockTable) put(e ent) {
	if (t.used+1)*2 > len(t.ents) {
		t.rebuild()
	}
	i, found := t.find(e.addr)
	if found {
		t.ents[i] = e
		return
	}
	t.insertAt(i, e)
}

// delAt frees slot i, which holds a live block.
func (t *blockTable) delAt(i uint64) {
	t.ents[i].dead = true
	t.n--
}

func (t *blockTable) rebuild() {
	ents := t.ents
	c := len(ents)
	if t.n*4 > c {
		c *= 2
	}
	t.ents = make([]ent, c)
	t.mask = uint64(c - 1)
	t.n, t.used = 0, 0
	for i := range ents {
		if ents[i].addr != 0 && !ents[i].dead {
			t.put(ents[i])
		}
	}
}

func (t *blockTable) each(f func(Block)) {
	for i := range t.ents {
		if t.ents[i].addr != 0 && !t.ents[i].dead {
			f(t.ents[i].block())
		}
	}
}
