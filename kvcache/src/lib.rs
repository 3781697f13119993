//! Sub-tensor KV cache: preallocated per-layer caches written in place through views, copy-free.
