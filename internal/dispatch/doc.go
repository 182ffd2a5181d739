// Package dispatch owns the delivery of notifications to registrations, for every registry of
// the agent (notify's asynchronous, two-phase and target-device registries) and for the
// subscribers in other processes (client, and through it the C API): one ordered, bounded queue
// and one goroutine per registration, so that a callback may block and delays only its own
// registration.
//
// It holds the pieces those registries share and nothing of their Windows semantics:
//   - Ring: the FIFO a queue keeps its items in;
//   - Mailbox: a registration's queue, which drops its content for a resync when it is full
//     and says when its goroutine must be woken (only when it waits on an empty queue), and
//     hands its content over in batches;
//   - Diff: the removals and arrivals that take a registration's view to the truth (a resync,
//     or the start of a registration that includes the existing interfaces);
//   - Worker: a registration's goroutine, its context, and the wait of an unregistration
//     (UnregisterEx), which returns at once when called from that goroutine;
//   - WaitAll: the shutdown of a registry, up to a grace, naming the callbacks still running;
//   - Stacks and PanicError: a callback's panic as an error, its stack captured at most once
//     per StackInterval.
package dispatch
