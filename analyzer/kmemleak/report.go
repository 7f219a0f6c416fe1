package kmemleak

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, rep Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the ranked groups, each with its signature frames.
// top limits the groups shown; 0 shows all.
func WriteText(w io.Writer, rep Report, top int) error {
	var b strings.Builder
	if rep.Objects == 0 {
		b.WriteString("kmemleak: no unreferenced objects reported\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "kmemleak: %d unreferenced %s, %s, in %d %s\n",
		rep.Objects, plural(rep.Objects, "object", "objects"), FormatBytes(rep.Bytes),
		len(rep.Groups), plural(len(rep.Groups), "group", "groups"))
	if rep.Duplicates > 0 {
		fmt.Fprintf(&b, "(%d repeated %s from several reads counted once)\n",
			rep.Duplicates, plural(rep.Duplicates, "object", "objects"))
	}
	shown := rep.Groups
	if top > 0 && len(shown) > top {
		shown = shown[:top]
	}
	for i, g := range shown {
		fmt.Fprintf(&b, "\n#%d %s\n", i+1, g.Title)
		fmt.Fprintf(&b, "   %d %s, %s", g.Count, plural(g.Count, "object", "objects"), FormatBytes(g.Bytes))
		if len(g.Kinds) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(g.Kinds, ", "))
		}
		b.WriteString("\n")
		if len(g.Comms) > 0 {
			fmt.Fprintf(&b, "   comm: %s\n", strings.Join(g.Comms, ", "))
		}
		if g.Boot {
			b.WriteString("   allocated during boot (swapper): usually a false positive\n")
		}
		for _, f := range g.Frames {
			fmt.Fprintf(&b, "     %s\n", f)
		}
	}
	if len(shown) < len(rep.Groups) {
		fmt.Fprintf(&b, "\n(%d more %s not shown)\n", len(rep.Groups)-len(shown),
			plural(len(rep.Groups)-len(shown), "group", "groups"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
