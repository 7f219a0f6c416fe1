package traceformat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"
)

// frameReader reads, checks and decompresses a trace's frames on a
// goroutine of its own, one frame ahead of the parse: frames are
// independent zstd frames, so decompressing frame k+1 while frame k is
// parsed takes the decompression off the parse's time. A frame's buffers
// go back to the reader once its records are parsed; with three buffer
// sets, memory stays proportional to a few frames.
type frameReader struct {
	out  chan frameItem
	free chan *frameBufs
	stop chan struct{}
	done chan struct{}
}

type frameBufs struct{ payload, raw []byte }

// frameItem is one frame's data, or how the frames ended: err for a
// corrupt frame, last for the end of the file (truncated when it ends
// inside a frame header or payload). bytes is the file's bytes read so
// far, for Stats.Bytes.
type frameItem struct {
	data      []byte
	bufs      *frameBufs
	bytes     int64
	last      bool
	truncated bool
	err       error
}

func newFrameReader(r io.Reader, name string, read int64) (*frameReader, error) {
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
		fr.run(r, name, read, zd)
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

func (fr *frameReader) run(r io.Reader, name string, read int64, zd *zstd.Decoder) {
	frames := 0
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
		if stored > maxFrame || rawLen > maxFrame || (enc != encRaw && enc != encZstd) {
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
		data := bufs.payload
		if enc == encZstd {
			bufs.raw, err = zd.DecodeAll(bufs.payload, bufs.raw[:0])
			if err != nil || len(bufs.raw) != int(rawLen) {
				fr.send(frameItem{bytes: read, err: &FormatError{name, fmt.Sprintf("frame %d does not decompress", frames+1)}})
				return
			}
			data = bufs.raw
		}
		frames++
		if !fr.send(frameItem{data: data, bufs: bufs, bytes: read}) {
			return
		}
	}
}
