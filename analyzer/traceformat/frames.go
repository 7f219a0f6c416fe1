package traceformat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// frameReader reads, checks and decompresses a trace's frames on a
// goroutine of its own, one frame ahead of the parse: frames are
// independent, so decompressing frame k+1 while frame k is
// parsed takes the decompression off the parse's time. A frame's buffers
// go back to the reader once its records are parsed; with three buffer
// sets, memory stays proportional to a few frames.
type frameReader struct {
	out  chan frameItem
	free chan *frameBufs
	stop chan struct{}
	done chan struct{}
}

type frameBufs struct {
	payload, raw []byte
	side         [2][]byte // a split frame's address and size streams
}

// frameItem is one frame's data, or how the frames ended: err for a
// corrupt frame, last for the end of the file (truncated when it ends
// inside a frame header or payload). bytes is the file's bytes read so
// far, for Stats.Bytes.
type frameItem struct {
	data      []byte
	side      *[2][]byte // a split frame's address and size streams; data is its main stream
	bufs      *frameBufs
	bytes     int64
	last      bool
	truncated bool
	err       error
}

func newFrameReader(r io.Reader, name string, read int64, maxEnc byte) (*frameReader, error) {
	zd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxFrame))
	if err != nil {
		return nil, err
	}
	fr := &frameReader{out: make(chan frameItem, 1), free: make(chan *frameBufs, 3), stop: make(chan struct{}), done: make(chan struct{})}
	for i := 0; i < cap(fr.free); i++ {
		fr.free <- &frameBufs{}
	}
	go func() {
		defer close(fr.done)
		defer zd.Close()
		fr.run(r, name, read, zd, maxEnc)
	}()
	return fr, nil
}

// next returns the next frame or the end; after an item with last or err
// set it must not be called again.
func (fr *frameReader) next() frameItem { return <-fr.out }

// recycle hands a parsed frame's buffers back to the reader.
func (fr *frameReader) recycle(it frameItem) {
	if it.bufs != nil {
		fr.free <- it.bufs
	}
}

// close stops the reader and waits for it: the caller may close the file
// once Decode returns.
func (fr *frameReader) close() {
	close(fr.stop)
	<-fr.done
}

func (fr *frameReader) send(it frameItem) bool {
	select {
	case fr.out <- it:
		return true
	case <-fr.stop:
		return false
	}
}

// maxEnc is the newest frame encoding the file's version has.
func (fr *frameReader) run(r io.Reader, name string, read int64, zd *zstd.Decoder, maxEnc byte) {
	frames := 0
	hs := new(huff0.Scratch)
	for {
		var bufs *frameBufs
		select {
		case bufs = <-fr.free:
		case <-fr.stop:
			return
		}
		var hdr [16]byte
		n, err := io.ReadFull(r, hdr[:])
		read += int64(n)
		if err == io.EOF {
			fr.send(frameItem{bytes: read, last: true})
			return
		}
		if err != nil {
			fr.send(frameItem{bytes: read, last: true, truncated: true})
			return
		}
		stored := binary.LittleEndian.Uint32(hdr[0:])
		rawLen := binary.LittleEndian.Uint32(hdr[4:])
		enc := hdr[8]
		crc := binary.LittleEndian.Uint32(hdr[12:])
		if stored > maxFrame || rawLen > maxFrame || enc > maxEnc {
			fr.send(frameItem{bytes: read, err: &FormatError{name, fmt.Sprintf("corrupt frame header at byte %d", read-16)}})
			return
		}
		// Grow the buffer as bytes arrive: a corrupt length in a short
		// file must not allocate what it claims.
		pb := bytes.NewBuffer(bufs.payload[:0])
		m, err := io.CopyN(pb, r, int64(stored))
		bufs.payload = pb.Bytes()
		read += m
		if err != nil {
			fr.send(frameItem{bytes: read, last: true, truncated: true})
			return
		}
		if crc32.ChecksumIEEE(bufs.payload) != crc {
			fr.send(frameItem{bytes: read, err: &FormatError{name, fmt.Sprintf("checksum mismatch in frame %d at byte %d", frames+1, read-int64(stored)-16)}})
			return
		}
		it := frameItem{data: bufs.payload, bufs: bufs, bytes: read}
		size := len(bufs.payload)
		switch enc {
		case encZstd:
			bufs.raw, err = zd.DecodeAll(bufs.payload, bufs.raw[:0])
			it.data, size = bufs.raw, len(bufs.raw)
		case encSplit:
			err = bufs.split(zd, hs, int(rawLen))
			it.data, it.side = bufs.raw, &bufs.side
			size = len(bufs.raw) + len(bufs.side[0]) + len(bufs.side[1])
		}
		if err != nil || size != int(rawLen) {
			fr.send(frameItem{bytes: read, err: &FormatError{name, fmt.Sprintf("frame %d does not decompress", frames+1)}})
			return
		}
		frames++
		if !fr.send(it) {
			return
		}
	}
}

var errSplit = errors.New("corrupt split frame")

// split decodes a split frame's payload (encoding 2): its main stream, a
// zstd frame, into b.raw, and its address and size streams into b.side.
// The parse takes thread pieces' address and size columns from those
// (decoder.frame).
func (b *frameBufs) split(zd *zstd.Decoder, hs *huff0.Scratch, rawLen int) error {
	p := b.payload
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return errSplit
	}
	var err error
	if b.raw, err = zd.DecodeAll(p[k:k+int(n)], b.raw[:0]); err != nil {
		return err
	}
	p = p[k+int(n):]
	for i := range b.side {
		if b.side[i], p, err = readStream(p, b.side[i][:0], hs, rawLen); err != nil {
			return err
		}
	}
	if len(p) != 0 {
		return errSplit
	}
	return nil
}

// Block kinds of a split frame's streams.
const (
	blockRaw  = 0
	blockHuff = 1 // huff0 4-stream block, its table first
	blockRLE  = 2 // one byte, repeated
)

// readStream appends one stream of a split frame to dst: uvarint length,
// then blocks (u8 kind, uvarint length, uvarint stored length, stored
// bytes) until that length is reached. It returns what follows.
func readStream(p, dst []byte, hs *huff0.Scratch, limit int) ([]byte, []byte, error) {
	total, k := binary.Uvarint(p)
	if k <= 0 || total > uint64(limit) {
		return nil, nil, errSplit
	}
	p = p[k:]
	if cap(dst) < int(total) {
		dst = make([]byte, 0, total)
	}
	for len(dst) < int(total) {
		if len(p) < 1 {
			return nil, nil, errSplit
		}
		kind := p[0]
		n, k1 := binary.Uvarint(p[1:])
		if k1 <= 0 {
			return nil, nil, errSplit
		}
		stored, k2 := binary.Uvarint(p[1+k1:])
		if k2 <= 0 || n > total-uint64(len(dst)) || n > huff0.BlockSizeMax || stored > uint64(len(p)-1-k1-k2) {
			return nil, nil, errSplit
		}
		blk := p[1+k1+k2 : 1+k1+k2+int(stored)]
		p = p[1+k1+k2+int(stored):]
		switch kind {
		case blockRaw:
			if stored != n {
				return nil, nil, errSplit
			}
			dst = append(dst, blk...)
		case blockRLE:
			if stored != 1 {
				return nil, nil, errSplit
			}
			for i := uint64(0); i < n; i++ {
				dst = append(dst, blk[0])
			}
		case blockHuff:
			s, rest, err := huff0.ReadTable(blk, hs)
			if err != nil {
				return nil, nil, errSplit
			}
			at := len(dst)
			got, err := s.Decoder().Decompress4X(dst[at:at:at+int(n)], rest)
			if err != nil || len(got) != int(n) {
				return nil, nil, errSplit
			}
			dst = dst[:at+int(n)]
		default:
			return nil, nil, errSplit
		}
	}
	return dst, p, nil
}
