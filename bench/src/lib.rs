//! Shared helpers for the tlite benchmarks.
