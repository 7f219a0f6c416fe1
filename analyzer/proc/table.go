package proc

import (
	"strings"
	"unicode/utf8"
)

// table lays out rows of cells in columns: the first column left-aligned
// (names), the others right-aligned (numbers), two spaces apart.
type table struct {
	rows [][]string
	left map[int]bool
}

func newTable(leftCols ...int) *table {
	t := &table{left: map[int]bool{0: true}}
	for _, c := range leftCols {
		t.left[c] = true
	}
	return t
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder, indent string) {
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
