package suppress

import (
	"path"
	"strings"
)

// glob reports whether s matches pat as a whole, where '*' matches any run
// of bytes, '?' one byte and '\' makes the next byte literal (the wildcard
// rules of valgrind's suppression matcher).
func glob(pat, s string) bool {
	return wildcard(pat, s, true)
}

// wildcard is a backtracking matcher that only ever needs to return to the
// most recent '*', which keeps it linear in practice and free of recursion
// on hostile patterns. With full unset only '*' is special, as in LSan.
func wildcard(pat, s string, full bool) bool {
	px, sx := 0, 0
	starPx, starSx := -1, -1
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			c := pat[px]
			switch {
			case c == '*':
				starPx, starSx = px, sx+1
				px++
				continue
			case c == '?' && full:
				if sx < len(s) {
					px++
					sx++
					continue
				}
			case c == '\\' && full && px+1 < len(pat):
				if sx < len(s) && s[sx] == pat[px+1] {
					px += 2
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if starPx >= 0 && starSx <= len(s) {
			px, sx = starPx, starSx
			continue
		}
		return false
	}
	return true
}

// lsanMatch follows LSan's template rules: a leading '^' anchors the
// template at the start, a trailing '$' at the end, '*' is a wildcard, and
// an unanchored template matches anywhere inside s. Like LSan, an empty
// string (an unknown function or file) never matches.
func lsanMatch(templ, s string) bool {
	if s == "" {
		return false
	}
	if strings.HasPrefix(templ, "^") {
		templ = templ[1:]
	} else {
		templ = "*" + templ
	}
	if strings.HasSuffix(templ, "$") {
		templ = templ[:len(templ)-1]
	} else {
		templ += "*"
	}
	return wildcard(templ, s, false)
}

// stripVersion drops an ELF symbol version ("dlopen@@GLIBC_2.34"), which
// some symbolizers keep and others drop, so a suppression written against
// either spelling matches both.
func stripVersion(name string) string {
	if i := strings.IndexByte(name, '@'); i > 0 {
		return name[:i]
	}
	return name
}

// funMatch matches a function pattern against a symbol, ignoring symbol
// versions when either side carries one.
func funMatch(pat, name string) bool {
	if glob(pat, name) {
		return true
	}
	if strings.IndexByte(pat, '@') < 0 && strings.IndexByte(name, '@') < 0 {
		return false
	}
	return glob(stripVersion(pat), stripVersion(name))
}

// pathMatch matches a pattern containing '/' against the whole path and any
// other pattern against the base name, so "libfoo.so*" needs no leading
// "*/" while "*/src/*" can still select a directory.
func pathMatch(pat, p string) bool {
	if strings.IndexByte(pat, '/') >= 0 {
		return glob(pat, p)
	}
	if p == "" {
		return glob(pat, "")
	}
	return glob(pat, path.Base(p))
}
