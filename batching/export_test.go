package batching

// SetOnWait makes b call f each time an Add starts waiting for room under
// MaxPendingBytes, so tests can tell that it blocks without sleeping. Call it before
// the first Add.
func SetOnWait[K comparable, T any](b *Batcher[K, T], f func()) { b.onWait = f }
