package suppress

import _ "embed"

// defaultSupp holds the built-in suppressions. It is a valgrind suppression
// file so that users can read it, copy from it, and check it with valgrind
// itself (after removing the "unfreed" kind, which valgrind does not know).
//
//go:embed default.supp
var defaultSupp []byte

// defaultSource names the built-in file in errors and in Usage.Source.
const defaultSource = "<default>"
