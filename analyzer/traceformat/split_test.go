package traceformat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// splitPayload takes a frame payload apart as the shim's split drain
// does: thread pieces lose their address and size columns to two streams
// of their own.
func splitPayload(t *testing.T, p []byte) (main, addrs, sizes []byte) {
	for len(p) > 0 {
		slot, k1 := binary.Uvarint(p)
		n, k2 := binary.Uvarint(p[k1:])
		hdr, body := p[:k1+k2], p[k1+k2:k1+k2+int(n)]
		p = p[k1+k2+int(n):]
		main = append(main, hdr...)
		if slot == 0 {
			main = append(main, body...)
			continue
		}
		q := body
		var l [3]uint64
		for i := range l {
			v, k := binary.Uvarint(q)
			l[i], q = v, q[k:]
		}
		inMain := len(body) - len(q) + int(l[0]+l[1])
		main = append(main, body[:inMain]...)
		addrs = append(addrs, body[inMain:inMain+int(l[2])]...)
		sizes = append(sizes, body[inMain+int(l[2]):]...)
	}
	return main, addrs, sizes
}

// stream writes b in blocks of random sizes, each of a kind picked at
// random among those that can hold it.
func stream(t *testing.T, rng *rand.Rand, b []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(b)))
	var s huff0.Scratch
	s.Reuse = huff0.ReusePolicyNone
	for len(b) > 0 {
		blk := b[:min(len(b), 1+rng.Intn(400))]
		b = b[len(blk):]
		kind, stored := byte(blockRaw), blk
		if bytes.Count(blk, blk[:1]) == len(blk) && rng.Intn(2) == 0 {
			kind, stored = blockRLE, blk[:1]
		} else if rng.Intn(3) > 0 {
			if h, _, err := huff0.Compress4X(blk, &s); err == nil {
				kind, stored = blockHuff, h
			}
		}
		out = append(out, kind)
		out = binary.AppendUvarint(out, uint64(len(blk)))
		out = binary.AppendUvarint(out, uint64(len(stored)))
		out = append(out, stored...)
	}
	return out
}

func splitFrame(payload []byte, rawLen int, crcOK bool) []byte {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], uint32(rawLen))
	h[8] = encSplit
	crc := crc32.ChecksumIEEE(payload)
	if !crcOK {
		crc++
	}
	binary.LittleEndian.PutUint32(h[12:], crc)
	return append(h[:], payload...)
}

// toSplit rewrites a trace's raw frames as split frames (version 4).
func toSplit(t *testing.T, rng *rand.Rand, trace []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	out := fileHeaderV(4)
	for p := trace[16:]; len(p) > 0; {
		n := int(binary.LittleEndian.Uint32(p))
		raw := p[16 : 16+n]
		p = p[16+n:]
		main, addrs, sizes := splitPayload(t, raw)
		z := enc.EncodeAll(main, nil)
		pl := append(binary.AppendUvarint(nil, uint64(len(z))), z...)
		pl = append(pl, stream(t, rng, addrs)...)
		pl = append(pl, stream(t, rng, sizes)...)
		out = append(out, splitFrame(pl, len(raw), true)...)
	}
	return out
}

// A split frame decodes to the events of the same pieces in a raw frame,
// whatever its streams' blocks.
func TestDecodeSplitFrames(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		_, v3, n := randomTrace(seed)
		v4 := toSplit(t, rand.New(rand.NewSource(seed)), v3)
		var e3, e4 events
		if _, err := Decode(bytes.NewReader(v3), "v3", &e3); err != nil {
			t.Fatal(err)
		}
		st, err := Decode(bytes.NewReader(v4), "v4", &e4)
		if err != nil || st.Events != uint64(n) || st.Frames != 4 {
			t.Fatalf("seed %d: %d events in %d frames, %v (want %d in 4)", seed, st.Events, st.Frames, err, n)
		}
		if !reflect.DeepEqual(e3.ev, e4.ev) {
			t.Fatalf("seed %d: split frames decode differently", seed)
		}
	}
}

// A split frame that does not add up is corrupt: one line naming the
// file and the frame, never a panic, whatever byte is wrong.
func TestDecodeBadSplitFrames(t *testing.T) {
	_, v3, _ := randomTrace(7)
	good := toSplit(t, rand.New(rand.NewSource(7)), v3)
	first := good[16 : 32+binary.LittleEndian.Uint32(good[16:])]
	payload, rawLen := first[16:], int(binary.LittleEndian.Uint32(first[4:]))
	main, k := binary.Uvarint(payload)
	// The same columns with the address and size streams swapped: the
	// lengths add up, the pieces do not.
	raw := v3[32 : 32+binary.LittleEndian.Uint32(v3[16:])]
	m, addrs, sizes := splitPayload(t, raw)
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(m, nil)
	rng := rand.New(rand.NewSource(1))
	swapped := append(append(binary.AppendUvarint(nil, uint64(len(z))), z...), append(stream(t, rng, sizes), stream(t, rng, addrs)...)...)
	// Only the first piece in the main stream (the process piece), all
	// the columns in the streams.
	slot0, k1 := binary.Uvarint(m)
	n0, k2 := binary.Uvarint(m[k1:])
	if slot0 != 0 {
		t.Fatalf("first piece is slot %d", slot0)
	}
	z = enc.EncodeAll(m[:k1+k2+int(n0)], nil)
	extra := append(append(binary.AppendUvarint(nil, uint64(len(z))), z...), append(stream(t, rng, addrs), stream(t, rng, sizes)...)...)
	extraLen := k1 + k2 + int(n0) + len(addrs) + len(sizes)
	// All the pieces, empty streams.
	z = enc.EncodeAll(m, nil)
	short := append(append(binary.AppendUvarint(nil, uint64(len(z))), z...), append(uv(0), uv(0)...)...)
	bad := map[string]struct {
		payload []byte
		raw     int
		err     string
	}{
		"streams longer than the pieces":  {extra, extraLen, "frame 1: address or size stream longer than its pieces"},
		"streams shorter than the pieces": {short, len(m), "frame 1: columns run past the end of the address or size stream"},
		"main length past the end":        {append(binary.AppendUvarint(nil, uint64(len(payload))), payload[k:]...), rawLen, "frame 1 does not decompress"},
		"stream cut short":                {payload[:len(payload)-1], rawLen, "frame 1 does not decompress"},
		"bytes after the streams":         {append(bytes.Clone(payload), 0), rawLen, "frame 1 does not decompress"},
		"unknown block kind":              {append(append(bytes.Clone(payload[:k+int(main)]), 1, 9, 1, 1, 0), uv(0)...), rawLen, "frame 1 does not decompress"},
		"streams too short":               {append(append(bytes.Clone(payload[:k+int(main)]), uv(0)...), uv(0)...), rawLen, "frame 1 does not decompress"},
		"streams swapped":                 {swapped, rawLen, "frame 1: "},
	}
	if len(addrs) <= len(sizes) {
		t.Fatalf("the swap needs more address bytes than size bytes: %d, %d", len(addrs), len(sizes))
	}
	for name, c := range bad {
		b := append(fileHeaderV(4), splitFrame(c.payload, c.raw, true)...)
		_, err := Decode(bytes.NewReader(b), "bad.zst", &nop{})
		// The swapped streams fail wherever their garbage does first.
		if err == nil || !strings.HasPrefix(err.Error(), "bad.zst: "+c.err) || (name != "streams swapped" && err.Error() != "bad.zst: "+c.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want %q", name, err, c.err)
		}
	}
	// A flipped byte, its checksum made right, must fail cleanly or
	// decode: the first 64 (lengths, block headers), then a sample.
	for i := 0; i < len(payload); i += max(1, (i-64)/4) {
		pl := bytes.Clone(payload)
		pl[i] ^= 0x5a
		b := append(fileHeaderV(4), splitFrame(pl, rawLen, true)...)
		if _, err := Decode(bytes.NewReader(b), "flip", &nop{}); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("byte %d: %v", i, err)
		}
	}
	// Version 3 has no split frames.
	b := append(fileHeaderV(3), first...)
	var fe *FormatError
	if _, err := Decode(bytes.NewReader(b), "v3", &nop{}); !errors.As(err, &fe) || !strings.Contains(err.Error(), "corrupt frame header") {
		t.Errorf("split frame in a version 3 trace: %v", err)
	}
}
