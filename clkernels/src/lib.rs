#![doc = include_str!("../README.md")]
//!
//! # Parts
//!
//! [`runtime`] finds devices, reads their capabilities, builds and caches programs and creates prioritised queues;
//! [`kernels`] holds one `.cl` file per kernel family beside the Rust module that launches it; [`kv_storage`] backs
//! the `kvcache` crate with OpenCL buffers.

#![deny(missing_docs)]

pub mod kernels;
pub mod kv_storage;
pub mod runtime;
