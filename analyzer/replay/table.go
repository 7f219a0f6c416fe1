package replay

import "libleak/analyzer/event"

// blockTable maps addresses to live blocks: open addressing with linear
// probing and backward-shift deletion. The replay does one lookup and one
// insert or delete per event, which makes this its hottest structure;
// Go's map costs about twice as much here. A slot holds its key and its
// block together, in 40 bytes: a lookup, which mostly misses the cache,
// then touches one line rather than one in a key array and one in a value
// array.
type blockTable struct {
	ents []ent
	n    int
	mask uint64
}

// ent is a heap block in the table (heap blocks carry no mmap flags).
// addr 0 marks an empty slot: address 0 is never a block.
type ent struct {
	addr, size, time, stack uint64
	tid                     uint32
	op                      event.Op
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
	t.n = 0
}

func hashAddr(a uint64) uint64 { return (a >> 4) * 0x9e3779b97f4a7c15 >> 20 }

// find returns the slot holding a, or the empty slot where a would go.
func (t *blockTable) find(a uint64) (i uint64, found bool) {
	for i = hashAddr(a) & t.mask; ; i = (i + 1) & t.mask {
		switch t.ents[i].addr {
		case a:
			return i, true
		case 0:
			return i, false
		}
	}
}

// insertAt puts a new block into the empty slot find returned for its
// address; it reports false when the table must grow first (put then).
func (t *blockTable) insertAt(i uint64, e ent) bool {
	if (t.n+1)*2 > len(t.ents) {
		return false
	}
	t.ents[i] = e
	t.n++
	return true
}

func (t *blockTable) put(e ent) {
	if (t.n+1)*2 > len(t.ents) {
		t.grow()
	}
	for i := hashAddr(e.addr) & t.mask; ; i = (i + 1) & t.mask {
		switch t.ents[i].addr {
		case e.addr:
			t.ents[i] = e
			return
		case 0:
			t.ents[i] = e
			t.n++
			return
		}
	}
}

// delAt empties slot i, which holds a block.
func (t *blockTable) delAt(i uint64) {
	// Shift later entries of the run back so no probe sequence breaks.
	for j := (i + 1) & t.mask; t.ents[j].addr != 0; j = (j + 1) & t.mask {
		h := hashAddr(t.ents[j].addr) & t.mask
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			t.ents[i] = t.ents[j]
			i = j
		}
	}
	t.ents[i] = ent{}
	t.n--
}

func (t *blockTable) grow() {
	ents := t.ents
	t.init(len(ents))
	for i := range ents {
		if ents[i].addr != 0 {
			t.put(ents[i])
		}
	}
}

func (t *blockTable) each(f func(Block)) {
	for i := range t.ents {
		if t.ents[i].addr != 0 {
			f(t.ents[i].block())
		}
	}
}
