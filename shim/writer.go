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
#include <stdint.h>
#include <stddef.h>
uint32_t leak_writer_wait(int timeout_ms);
int leak_writer_final(void);
size_t leak_writer_drain(int final, const uint8_t **p);
void leak_write_frame(int enc, const void *p, size_t n, size_t raw_len, uint32_t crc);
void leak_writer_done(uint32_t gen);
int leak_scan_due(void);
*/
import "C"

import (
	"hash/crc32"
	"runtime"
	"unsafe"

	"github.com/klauspost/compress/zstd"
)

const (
	encZstd       = 1
	flushInterval = 100 // ms
)

func init() {
	go writeLoop()
}

func writeLoop() {
	// The write lock taken in leak_writer_wait is a pthread mutex: it must
	// be released by the thread that took it.
	runtime.LockOSThread()
	// No entropy coding of literals: a quarter less compression time
	// (on the program's cores, with two threads the writer's time is
	// theirs) for traces about a sixth larger.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true),
		zstd.WithNoEntropyCompression(true))
	if err != nil {
		return // the C side writes raw frames when the writer is not alive
	}
	// Room for the largest frame up front (a drain takes at most 64
	// buffers of 64 KiB): grown by append, the buffer moved, and the
	// pages of each new one were faulted in anew.
	dst := make([]byte, 0, 4<<20+64<<10)
	for {
		gen := C.leak_writer_wait(flushInterval)
		final := C.leak_writer_final()
		var p *C.uint8_t
		n := C.leak_writer_drain(final, &p)
		if n > 0 {
			src := unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
			dst = enc.EncodeAll(src, dst[:0])
			C.leak_write_frame(encZstd, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), n, C.uint32_t(crc32.ChecksumIEEE(dst)))
		}
		C.leak_writer_done(gen)
		C.leak_scan_due()
	}
}

func main() {}
