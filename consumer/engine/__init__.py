"""The delivery engine: offsets, key-ordered dispatch, retries, backpressure."""
