#![doc = include_str!("../README.md")]
//!
//! # Parts
//!
//! * [`Domain`] declares symbols with ranges (`1 ≤ seq ≤ max_ctx`) and sum constraints
//!   (`seq + past ≤ max_ctx`), and proves inequalities on them.
//! * [`Expr`] is an exact polynomial with integer coefficients; equal shapes have identical
//!   canonical forms, so shape checks are decisions, not guesses.
//! * [`Graph`] records ops in execution order; each builder method (`matmul`, `linear`, `add`,
//!   `reshape`, `permute`, `concat`, `slice`, `narrow`, `gather`, `embedding`, `rms_norm`,
//!   `layer_norm`, `rotary`, `attention`, `attention_scores`, `attention_values`, `softmax`,
//!   `reduce`, `write_into`, and for fused kernels `update_in_place`, `linear_into`,
//!   `attention_packed_qkv`) checks its shape rule and fails with [`SymShapeError::Shape`]
//!   naming the op, the node and the expressions.
//! * [`Graph::plan`] assigns activations to reusable buffers only where the buffer's size is
//!   proven to cover the tensor on the whole domain, and compiles every expression for
//!   [`MemoryPlan::evaluate_into`].
//! * [`models::llama_decoder`] builds and plans a Llama-family decoder;
//!   [`models::fused_decoder`] the same decoder as a fused-kernel runtime runs it (what tlite's
//!   engine allocates from).
//!
//! # Per-step cost
//!
//! Planning happens once per model. The planner interns every distinct expression (a 32-layer
//! Llama-2-7B-shaped decoder has 1193 tensors but only 24 distinct size/dim expressions and 8
//! buffers, because every layer reuses the same buffers), compiles them to flat coefficient and
//! slot arrays, and [`MemoryPlan::evaluate_into`] recomputes all of them plus the buffer offsets
//! in one pass without allocating; per-tensor answers ([`MemoryPlan::location`],
//! [`MemoryPlan::dims`]) are then O(1) table lookups. Overflow is ruled out at compile time by
//! bounding each expression on the domain, so the run-time arithmetic is unchecked `i64`.
//!
//! # Symbolica
//!
//! The issue asked for shape expressions backed by the Symbolica CAS. Symbolica 3.0.0 builds
//! here (with `numerica = "=3.0.0"` pinned, `integer-malachite` + `float-astro`, no GMP), but
//! without a licence key it restricts and alters the host process in ways a library must not
//! impose on its users (source: `symbolica-3.0.0/src/license.rs` and `src/state.rs`; confirmed by
//! `cargo run -p symshape --features symbolica --example symbolica_licence_probe`, which prints
//! the banner, reports a rayon pool of 1 thread on a 2-CPU machine, and dies with SIGABRT):
//!
//! * The first use of its global state or a workspace calls `LicenseManager::check()`
//!   (`state.rs:582`, `state.rs:1577`), which with no `SYMBOLICA_LICENSE` prints a banner to
//!   **stdout** (`license.rs:260-287`, "For non-commercial use only, limited to one Symbolica
//!   thread per user"; hidden only by `SYMBOLICA_HIDE_BANNER`) — it would corrupt CLI output.
//! * It spawns a thread that opens a TCP connection to `symbolica.io:12012` and sends its version
//!   (`license.rs:342-356`, `connect()` at `license.rs:367-374`): an unrequested network call
//!   from every process, including apps on phones.
//! * It calls `rayon::ThreadPoolBuilder::new().num_threads(1).build_global()`
//!   (`license.rs:290-292`): if Symbolica is touched before anything else uses rayon, the whole
//!   process's rayon pool is pinned to **one thread**.
//! * Each thread that uses it takes a per-user file lock `symbolica-restricted-thread-0.lock`
//!   (`license.rs:298-321`, under `~/.cache/symbolica/locks`); a second thread or a second
//!   process of the same user is refused and the process is **`abort()`ed** (`license.rs:314`,
//!   `license.rs:319`). That breaks `cargo test`'s parallel test threads, two engines on one
//!   machine, or an app that plans while another process of the same user plans too.
//! * The licence (`License.md`) is source-available: running it needs a free-use qualification
//!   (non-commercial) or a paid key (§3), which does not fit this workspace's
//!   `MIT OR Apache-2.0`; §4(4)-(5) also forbid using it as a "behavioral oracle" or "output
//!   comparison" to test other symbolic-mathematics code, so symshape does not cross-check its
//!   own algebra against Symbolica.
//!
//! So symshape does its algebra itself: shape expressions are polynomials, which need only exact
//! expansion, comparison, exact division and the shift-positivity proof in
//! [`Domain::proves_nonnegative`]. Symbolica is an optional, default-off feature `symbolica`:
//! when enabled, the expansion behind each positivity proof is done by Symbolica instead, inside
//! a small internal module that runs every Symbolica call on one dedicated worker thread at plan
//! time (so parallel callers in one process do not trigger the abort; other processes of the
//! same user still can). The per-step path never touches any CAS.

#![deny(missing_docs)]

#[cfg(feature = "symbolica")]
mod cas;
mod domain;
mod error;
mod eval;
mod expr;
mod fused_ops;
mod graph;
pub mod models;
mod plan;
mod rules;

pub use domain::{Domain, SumAtMost, SymbolRange};
pub use error::SymShapeError;
pub use expr::{Expr, Symbol};
pub use graph::{DType, Graph, OpNode, Shape, Storage, TensorId, TensorInfo};
pub use plan::{BufferPlan, Location, MemoryPlan, PlanOptions, PlanValues};
pub use rules::{Reduce, ReshapeDim};
