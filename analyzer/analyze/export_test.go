package analyze

// PrefetchMinSize lets tests count every trace as long.
var PrefetchMinSize = &prefetchMinSize
