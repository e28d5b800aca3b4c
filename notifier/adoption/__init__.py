"""Moving between notifier and the original BullMQ worker: `adopt` takes over what it left in
flight, `handback` returns the queue to it."""
