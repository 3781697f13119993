//! The OpenCL storage backend for the `kvcache` crate.
