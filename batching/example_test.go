package batching_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/s3persist/s3persist/batching"
)

// A journal writer: records of one stream go into numbered objects, written
// idempotently, asynchronously for most records and synchronously for a commit.
func Example() {
	var mu sync.Mutex
	objects := map[string]string{} // an object store: name -> content
	upload := func(ctx context.Context, b batching.Batch[string, []byte]) error {
		var content []string
		for _, rec := range b.Items {
			content = append(content, string(rec))
		}
		mu.Lock()
		defer mu.Unlock()
		// Named after Key and Seq: a retried upload overwrites its own object only.
		objects[fmt.Sprintf("%s/%04d", b.Key, b.Seq)] = strings.Join(content, ",")
		return nil
	}
	b, err := batching.New(batching.Config{BatchSize: 2}, upload)
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	for _, rec := range []string{"r0", "r1", "r2"} {
		// Async: accepted in memory, uploaded when a batch is full or FlushInterval passes.
		if _, err := b.Add(ctx, "stream-1", []byte(rec), len(rec), false); err != nil {
			panic(err)
		}
	}
	// Sync: urgent cuts the batch without waiting, and Wait returns once it is durable.
	t, err := b.Add(ctx, "stream-2", []byte("commit"), len("commit"), true)
	if err != nil {
		panic(err)
	}
	if err := t.Wait(ctx); err != nil {
		panic(err)
	}
	fmt.Println("commit is durable")

	// Close uploads r2, which waits for its batch to fill or for FlushInterval.
	if err := b.Close(ctx); err != nil {
		panic(err)
	}
	for _, name := range slices.Sorted(maps.Keys(objects)) {
		fmt.Println(name, objects[name])
	}
	// Output:
	// commit is durable
	// stream-1/0000 r0,r1
	// stream-1/0001 r2
	// stream-2/0000 commit
}
