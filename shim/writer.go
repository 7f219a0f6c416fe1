// The runtime's cgroup-aware GOMAXPROCS would keep two descriptors open in
// the traced program for good (its cgroup's CPU quota and period files,
// at the lowest free numbers, read again every second): the program's own
// files would get other numbers than without us.
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0

// Package main is libleak.so: C hooks record allocations into per-thread
// buffers (hooks.c, record.c); this file is the writer that compresses
// what the C side drains into independent zstd frames, at least every
// 100 ms, so a killed process's trace decodes up to its last frame.
//
// Go is never called from a hook: the writer goroutine calls into C, never
// the reverse. See docs/trace-format.md for what is written.
package main

/*
#cgo CFLAGS: -O2 -Wall -Wno-format-truncation -fno-omit-frame-pointer -ftls-model=initial-exec
#cgo LDFLAGS: -ldl
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"runtime/debug"
	"unsafe"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

const (
	gcLimit       = 64 << 20
	flushInterval = 100 // ms
	blockSize     = 128 << 10
	smallRoom     = 256 << 10
	frameRoom     = 6 << 20 // more than the largest frame's 4 MiB can take compressed
)

func init() {
	// The writer allocates its buffers once, up front, and nothing per
	// frame: the collector has nothing to reclaim, yet the default goal
	// (4 MiB, then twice the live heap) ran two collections in every
	// traced process as those buffers were made, 1 to 9 ms of CPU each
	// here. It runs only if the Go heap ever passes the limit.
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(gcLimit)
	go writeLoop()
}

func writeLoop() {
	// The write lock taken in leak_writer_wait is a pthread mutex: it must
	// be released by the thread that took it.
	runtime.LockOSThread()
	// zstd takes the frame's main stream (tags, times, stack
	// definitions), nearly all repeats: matches shrink it, and entropy
	// coding its few literals is not worth its time (on the program's
	// cores: with two threads the writer's time is theirs).
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true),
		zstd.WithNoEntropyCompression(true))
	if err != nil {
		return // the C side writes raw frames when the writer is not alive
	}
	// Enough for a small process's frames; the first frame that needs
	// more moves both to room for the largest frame (a drain takes at
	// most 64 buffers of 64 KiB), so that append never grows them: each
	// time it did, the pages of the new buffer were faulted in anew.
	dst := make([]byte, 0, smallRoom)
	zmain := make([]byte, 0, smallRoom)
	hs := &huff0.Scratch{Reuse: huff0.ReusePolicyNone}
	for {
		gen := C.leak_writer_wait(flushInterval)
		final := C.leak_writer_final()
		var d C.struct_drained
		C.leak_writer_drain(final, &d)
		if d.payload_len > 0 {
			if raw := int(d.payload_len + d.addrs_len + d.sizes_len); raw > cap(dst)-smallRoom/4 && cap(dst) < frameRoom {
				dst, zmain = area(frameRoom), area(frameRoom)
			}
			zmain = enc.EncodeAll(bytesAt(d.payload, d.payload_len), zmain[:0])
			dst = binary.AppendUvarint(dst[:0], uint64(len(zmain)))
			dst = append(dst, zmain...)
			dst = appendStream(dst, bytesAt(d.addrs, d.addrs_len), hs)
			dst = appendStream(dst, bytesAt(d.sizes, d.sizes_len), hs)
			raw := d.payload_len + d.addrs_len + d.sizes_len
			C.leak_write_frame(C.ENC_SPLIT, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), raw, C.uint32_t(crc32.ChecksumIEEE(dst)))
		}
		C.leak_writer_done(gen)
		C.leak_scan_due()
	}
}

// area returns an empty slice with room for n bytes, mapped by the C side
// in huge pages (Go's heap faulted a big frame in a page at a time), or
// from Go's heap if that fails.
func area(n int) []byte {
	if p := C.leak_writer_area(C.size_t(n)); p != nil {
		return unsafe.Slice((*byte)(p), n)[:0]
	}
	return make([]byte, 0, n)
}

func bytesAt(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

// Block kinds of a split frame's address and size streams.
const (
	blockRaw  = 0
	blockHuff = 1 // huff0 4-stream block with its table
	blockRLE  = 2 // one byte, repeated
)

// appendStream appends src as a split frame's stream: its length, then
// blocks of at most blockSize bytes, each Huffman-coded on its own.
// Addresses and sizes are a few bytes' alphabet with few repeats: an
// entropy coder gets them smaller than zstd's match finder without
// entropy coding, in a third of the time.
func appendStream(dst, src []byte, hs *huff0.Scratch) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(src)))
	for len(src) > 0 {
		b := src[:min(len(src), blockSize)]
		src = src[len(b):]
		out, _, err := huff0.Compress4X(b, hs)
		switch {
		case err == nil:
			dst = append(dst, blockHuff)
			dst = binary.AppendUvarint(dst, uint64(len(b)))
			dst = binary.AppendUvarint(dst, uint64(len(out)))
			dst = append(dst, out...)
		case errors.Is(err, huff0.ErrUseRLE):
			dst = append(dst, blockRLE)
			dst = binary.AppendUvarint(dst, uint64(len(b)))
			dst = binary.AppendUvarint(dst, 1)
			dst = append(dst, b[0])
		default:
			dst = append(dst, blockRaw)
			dst = binary.AppendUvarint(dst, uint64(len(b)))
			dst = binary.AppendUvarint(dst, uint64(len(b)))
			dst = append(dst, b...)
		}
	}
	return dst
}

func main() {}
