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
// when live and dead slots fill half the table: in place, or, if the live
// ones fill more than 3/8, into a table twice the size; so its size
// follows the live blocks (at most 16/3 slots per live block), and a
// rebuild, which visits every slot, comes after at least an eighth of the
// slots were newly taken.
type blockTable struct {
	ents []ent
	n    int // live slots
	used int // live and dead slots
	mask uint64

	scratch []ent // purge's
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
	if t.n*8 <= len(t.ents)*3 {
		t.purge()
		return
	}
	ents := t.ents
	c := 2 * len(ents)
	t.ents = make([]ent, c)
	t.mask = uint64(c - 1)
	t.n, t.used = 0, 0
	for i := range ents {
		if ents[i].addr != 0 && !ents[i].dead {
			t.put(ents[i])
		}
	}
}

// purge drops the dead slots in place, a run of occupied slots at a time:
// it empties the run and puts its live blocks back, each at or before its
// old slot, so runs after it are not disturbed.
func (t *blockTable) purge() {
	c := uint64(len(t.ents))
	start := uint64(0)
	for t.ents[start].addr != 0 {
		start++ // an empty slot exists: at most half are used
	}
	for k := uint64(0); k < c; {
		j := (start + k) & t.mask
		if t.ents[j].addr == 0 {
			k++
			continue
		}
		live := t.scratch[:0]
		for ; t.ents[j].addr != 0; j, k = (j+1)&t.mask, k+1 {
			if !t.ents[j].dead {
				live = append(live, t.ents[j])
			}
			t.ents[j] = ent{}
		}
		for _, e := range live {
			i := hashAddr(e.addr) & t.mask
			for t.ents[i].addr != 0 {
				i = (i + 1) & t.mask
			}
			t.ents[i] = e
		}
		t.scratch = live[:0]
	}
	t.used = t.n
}

func (t *blockTable) each(f func(Block)) {
	for i := range t.ents {
		if t.ents[i].addr != 0 && !t.ents[i].dead {
			f(t.ents[i].block())
		}
	}
}
