package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseDuration accepts Go durations ("1m30s") and plain seconds ("90").
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("not a duration (try 30s or 5m)")
	}
	return d, nil
}
