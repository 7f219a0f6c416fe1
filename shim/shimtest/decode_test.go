package shimtest

import (
	"libleak/analyzer/event"
	"libleak/analyzer/traceformat"
)

func traceformatDecodeFile(path string, h event.Handler) (traceformat.Stats, error) {
	return traceformat.DecodeFile(path, h)
}
