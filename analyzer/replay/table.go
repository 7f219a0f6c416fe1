package replay

// blockTable maps addresses to live blocks: open addressing with linear
// probing and backward-shift deletion. The replay does one lookup and one
// insert or delete per event, which makes this its hottest structure;
// Go's map costs about twice as much here.
type blockTable struct {
	keys []uint64 // 0: empty (address 0 is never a block)
	vals []Block
	n    int
	mask uint64
}

func (t *blockTable) init(size int) {
	c := 1024
	for c < size*2 {
		c *= 2
	}
	t.keys = make([]uint64, c)
	t.vals = make([]Block, c)
	t.mask = uint64(c - 1)
	t.n = 0
}

func hashAddr(a uint64) uint64 { return (a >> 4) * 0x9e3779b97f4a7c15 >> 20 }

// find returns the slot holding a, or the empty slot where a would go.
func (t *blockTable) find(a uint64) (i uint64, found bool) {
	for i = hashAddr(a) & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case a:
			return i, true
		case 0:
			return i, false
		}
	}
}

// insertAt puts a new block into the empty slot find returned for its
// address; it reports false when the table must grow first (put then).
func (t *blockTable) insertAt(i uint64, b Block) bool {
	if (t.n+1)*2 > len(t.keys) {
		return false
	}
	t.keys[i], t.vals[i] = b.Addr, b
	t.n++
	return true
}

func (t *blockTable) get(a uint64) (Block, bool) {
	for i := hashAddr(a) & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case a:
			return t.vals[i], true
		case 0:
			return Block{}, false
		}
	}
}

func (t *blockTable) put(a uint64, b Block) {
	if (t.n+1)*2 > len(t.keys) {
		t.grow()
	}
	for i := hashAddr(a) & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case a:
			t.vals[i] = b
			return
		case 0:
			t.keys[i], t.vals[i] = a, b
			t.n++
			return
		}
	}
}

func (t *blockTable) del(a uint64) {
	if i, ok := t.find(a); ok {
		t.delAt(i)
	}
}

// delAt empties slot i, which holds a block.
func (t *blockTable) delAt(i uint64) {
	// Shift later entries of the run back so no probe sequence breaks.
	for j := (i + 1) & t.mask; t.keys[j] != 0; j = (j + 1) & t.mask {
		h := hashAddr(t.keys[j]) & t.mask
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			t.keys[i], t.vals[i] = t.keys[j], t.vals[j]
			i = j
		}
	}
	t.keys[i], t.vals[i] = 0, Block{}
	t.n--
}

func (t *blockTable) grow() {
	keys, vals := t.keys, t.vals
	t.init(len(keys))
	for i, k := range keys {
		if k != 0 {
			t.put(k, vals[i])
		}
	}
}

func (t *blockTable) each(f func(Block)) {
	for i, k := range t.keys {
		if k != 0 {
			f(t.vals[i])
		}
	}
}
