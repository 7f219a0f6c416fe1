package replay

import (
	"math/rand"
	"testing"
)

// The table against a map, through the replay's uses: allocations at
// fresh and at recently freed addresses (taking dead slots back), frees,
// blocks replaced in place, enough of them to grow it and to drop its
// dead slots in place many times, with addresses that collide.
func TestBlockTable(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var tb blockTable
	tb.init(16)
	want := map[uint64]Block{}
	var freed []uint64
	purges, grows := 0, 0
	for step := 0; step < 400000; step++ {
		used, size := tb.used, len(tb.ents)
		var a uint64
		switch r := rng.Intn(10); {
		case r < 3 && len(freed) > 0:
			a = freed[rng.Intn(len(freed))]
		case r < 5:
			a = uint64(1+rng.Intn(1<<12)) << 16 // same low bits: collisions
		default:
			a = uint64(1+rng.Intn(1<<22)) << 4
		}
		// Grow to some thousands of live blocks, then hold steady while
		// new addresses come and go, then shrink.
		pct := 50
		if step < 50000 {
			pct = 40
		} else if step > 350000 {
			pct = 60
		}
		free := rng.Intn(100) < pct
		if free && len(want) > 0 && rng.Intn(8) != 0 {
			for k := range want { // a live block, mostly
				a = k
				break
			}
		}
		i, found := tb.find(a)
		_, ok := want[a]
		if found != ok {
			t.Fatalf("step %d: find(%#x) = %v, want %v", step, a, found, ok)
		}
		switch {
		case free && found:
			tb.delAt(i)
			delete(want, a)
			freed = append(freed, a)
		case !free && found:
			b := Block{Addr: a, Size: uint64(step), Stack: 7}
			tb.ents[i] = toEnt(&b)
			want[a] = b
		case !free:
			b := Block{Addr: a, Size: uint64(step), Time: uint64(step), Stack: uint64(rng.Intn(100)), Tid: 3}
			if e := toEnt(&b); !tb.insertAt(i, e) {
				tb.put(e)
			}
			want[a] = b
		}
		if len(freed) > 5000 {
			freed = freed[2500:]
		}
		if len(tb.ents) > size {
			grows++
		} else if tb.used < used-1 {
			purges++
		}
		if tb.n != len(want) || tb.used*2 > len(tb.ents) || tb.used < tb.n {
			t.Fatalf("step %d: %d live, %d used of %d slots; want %d live", step, tb.n, tb.used, len(tb.ents), len(want))
		}
		if step%50000 == 0 || step == 399999 {
			got := map[uint64]Block{}
			tb.each(func(b Block) { got[b.Addr] = b })
			if len(got) != len(want) {
				t.Fatalf("step %d: each gives %d blocks, want %d", step, len(got), len(want))
			}
			for a, b := range want {
				if got[a] != b {
					t.Fatalf("step %d: %#x is %+v, want %+v", step, a, got[a], b)
				}
				if i, ok := tb.find(a); !ok || tb.ents[i].block() != b {
					t.Fatalf("step %d: %#x not found", step, a)
				}
			}
		}
	}
	if purges < 10 || grows < 2 {
		t.Errorf("%d purges and %d doublings: the test does not exercise them", purges, grows)
	}
}
