// Package texttable lays out the plain-text tables of the sampling
// reports (slab, proc, top).
package texttable

import (
	"strings"
	"unicode/utf8"
)

// Table lays out rows of cells in columns: the first column left-aligned
// (names), the others right-aligned (numbers), two spaces apart.
type Table struct {
	rows [][]string
	left map[int]bool
}

// New returns a table whose first column and the columns listed are
// left-aligned.
func New(leftCols ...int) *Table {
	t := &Table{left: map[int]bool{0: true}}
	for _, c := range leftCols {
		t.left[c] = true
	}
	return t
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.rows = append(t.rows, cells) }

// Write writes the table, each line after indent.
func (t *Table) Write(b *strings.Builder, indent string) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var line strings.Builder
		line.WriteString(indent)
		for i, c := range r {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if t.left[i] {
				line.WriteString(c + pad)
			} else {
				line.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}
