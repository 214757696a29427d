// Package batching is a write-behind batcher: callers add small items under a key, and
// a Batcher groups each key's items into large batches and uploads them in the
// background, through a function the caller supplies. It knows nothing of what a key,
// an item or an upload is; s3persist uses it to turn journal records into few, large
// objects.
//
// # Use
//
//	b, err := batching.New(batching.Config{}, func(ctx context.Context, bt batching.Batch[uint64, []byte]) error {
//		return store.Put(ctx, fmt.Sprintf("journal/%d/%016x", bt.Key, bt.Seq), encode(bt.Items))
//	})
//	...
//	_, err = b.Add(ctx, stream, record, len(record), false) // async: accepted in memory
//	t, err := b.Add(ctx, stream, record, len(record), true) // sync: group commit...
//	err = t.Wait(ctx)                                        // ...durable once this returns nil
//	...
//	err = b.Close(ctx) // uploads what is left, stops the goroutines
//
// A key's open batch is cut into a batch when it is full (Config.BatchSize items or
// Config.BatchBytes bytes), when Config.FlushInterval has passed since its first item
// (or, if the key is busy uploading then, as soon as it is not: a batch cut earlier could
// not start sooner, so an outage leaves a few full batches, not one per interval), when
// an urgent item is added and the key is not busy, and by Flush and Close.
//
// # Ordering
//
// The items of one key are uploaded in the order Add accepted them: batch n+1 of a key
// is never passed to the upload before batch n of that key was uploaded successfully,
// and at most one upload of a key runs at a time. Seq numbers a key's batches 0, 1, 2,
// ... with no gap, the same on every attempt, so an upload that names its object after
// Key and Seq is idempotent. Different keys upload concurrently, at most
// Config.MaxConcurrentUploads at once, taking turns first come first served.
//
// There is no order between keys, and none between items added concurrently to one key
// (the order is the one in which Add took the lock).
//
// # Durability and retries
//
// Add returning nil means the item is in memory only. Ticket.Wait returning nil means
// the upload of the item's batch returned nil; Flush returning nil means that holds for
// every item accepted before Flush was called.
//
// A failed upload is retried with exponential backoff and jitter (Config.RetryBackoff
// doubling up to Config.MaxRetryBackoff), for as long as it takes, while the batch's
// items stay in memory and the key's later batches wait. Each attempt gets a context
// bounded by Config.UploadTimeout and derived from the Batcher's own, never from a
// caller's.
//
// An error that Config.Retryable rejects fails the batch permanently. The Tickets of its
// items, and of every later batch of the key, report an error that wraps it. The batch
// is not dropped: the key is parked, its batch and the later ones are kept (and still
// count as pending bytes), and the next Flush or Close tries them again, in order. A
// Flush or Close during which a batch fails permanently returns an error wrapping the
// upload's. Meanwhile Add keeps accepting items for the key, so a key that stays parked
// eventually fills MaxPendingBytes and blocks every Add: call Flush to retry, or Close
// to give up and learn how much was not uploaded.
//
// # Backpressure
//
// The bytes accepted and not yet durable never exceed Config.MaxPendingBytes: Add blocks
// until enough of them are durable, or until its context ends (the item is then not
// accepted) or Close is called. The only exception is an item larger than the bound,
// accepted when nothing else is pending. The Add hot path takes one mutex, appends to a
// slice, and starts no goroutine and no timer; a Batcher's costs per batch (a goroutine
// hand-off, a few allocations) are spread over up to BatchSize items.
//
// # Lifecycle
//
// New starts one scheduler goroutine, which cuts batches when FlushInterval passes. An
// upload goroutine starts when a batch is ready and an upload slot is free; it keeps
// its slot for the next ready batch, of any key, and exits when there is none. Close stops accepting items (Add returns ErrClosed),
// uploads everything, and returns after every goroutine has returned. If its context
// ends first, or a batch fails permanently, Close cancels the uploads in flight and
// returns an error that says how many items, bytes and keys are not durable: nothing is
// dropped silently, but nothing is uploaded after Close returns. A second Close returns
// ErrClosed.
package batching
