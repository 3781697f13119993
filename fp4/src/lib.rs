#![doc = include_str!("../README.md")]
//!
//! # The format
//!
//! A weight matrix `W` is `[rows, cols]` = `[N out features, K in features]` (PyTorch
//! `nn.Linear` layout, `y = W·x`). Each row is cut into groups of `G ∈ {32, 64, 128}`
//! consecutive weights along K ([`GroupSize`]); K must be a multiple of G. Each weight has a
//! code `q ∈ 0..=15`, each (row, group) an f16 scale `s` and an f16 offset `b`:
//!
//! ```text
//! h = 1 + q/16            (in [1, 2): 16 evenly spaced values, step 1/16)
//! w = s·h + b             (levels b + s, b + 17s/16, …, b + 31s/16; step s/16)
//! ```
//!
//! ## The bit recipe
//!
//! | target | bits of `h` | ops |
//! |---|---|---|
//! | FP16 | `0x3C00 \| (q << 6)` | `q` = nibble (shift + `& 0xF`), shift left 6, OR |
//! | FP32 | `0x3F80_0000 \| (q << 19)` | `q` = nibble, shift left 19, OR |
//!
//! `0x3C00` is 1.0 in FP16 (sign 0, exponent 15 = bias, mantissa 0); its 10-bit mantissa's top
//! four bits (9..=6) take `q`, adding `q·2^6 / 2^10 = q/16`. Likewise `0x3F800000` is 1.0 in
//! FP32 and bits 22..=19 of its 23-bit mantissa take `q`. The FP32 recipe exists because PoCL
//! and NVIDIA's OpenCL lack `cl_khr_fp16`: there, scales and offsets are read with
//! `vload_half` and the arithmetic is done in f32. In a kernel, with the packed word `u` holding
//! eight codes: `as_float(0x3F800000u | ((u >> (4*i)) & 0xFu) << 19)` — or, cheaper, mask first
//! and shift by `19 - 4i` (negative: right). [`recipe`] has both recipes and the tests check
//! them bit-exactly against `1 + q/16` for all 16 codes.
//!
//! ## The packed layout (what the GPU kernels read)
//!
//! * `codes`: `rows * K/2` bytes, row-major. Byte `j` of a row holds element `2j` in its low
//!   nibble and `2j+1` in its high nibble; so, read as a little-endian `u32`, word `t` holds
//!   element `8t+i` in bits `4i..4i+3`. A 16-byte load (`uint4` / `vload4` on `uint*`) covers 32
//!   consecutive elements of one row = exactly one G=32 group (G=64: two loads, G=128: four).
//!   Consecutive work-items read consecutive 16-byte chunks of the same row, so loads coalesce
//!   for the decode (matvec: one row per work-group) and prefill (matrix: a tile of rows, each
//!   row read in 16-byte chunks) kernels alike.
//! * `scales`, `offsets`: f16, each `[rows][K/G]` row-major; a work-item that loads group `j`
//!   of row `r` reads `scales[r*K/G + j]` and `offsets[r*K/G + j]`.
//! * Useful identity for kernels: `Σ_k w_k·x_k` over a group `= s·Σ_k h_k·x_k + b·Σ_k x_k`, so
//!   the offset costs one multiply-add per group, not per weight.
//!
//! Storage: 4 bits per code + 32 bits of (s, b) per group = 5.0 bits/weight at G=32, 4.5 at
//! G=64, 4.25 at G=128.
//!
//! ## Worked example: one G=32 group
//!
//! The 32 weights (the first eight shown) `0.000, 0.032, 0.053, 0.037, 0.017, -0.008, -0.056,
//! -0.049, …` (min −0.092, max 0.108) quantise to `s = 0.2096` (f16 bits `0x32B5`) and
//! `b = −0.2991` (bits `0xB4C9`): the step is `s/16 = 0.0131` and level 0 is `s + b = −0.0895`.
//! The first eight codes are `7, 9, 11, 10, 8, 6, 3, 3`, packed as bytes `0x97, 0xAB, 0x68,
//! 0x33` (element 0 in the low nibble). Element 1 (`0.032`) has `q = 9`:
//!
//! ```text
//! FP16: 0x3C00 | (9 << 6)      = 0x3E40     = 1.5625
//! FP32: 0x3F800000 | (9 << 19) = 0x3FC80000 = 1.5625
//! w    = 0.20959473 · 1.5625 + (−0.29907227) = 0.0284195   (error −0.0036; half a step is 0.0066)
//! ```
//!
//! ```
//! use fp4::{GroupSize, M0e4Matrix, MatrixShape};
//! use half::f16;
//! let (s, b) = (f16::from_bits(0x32B5), f16::from_bits(0xB4C9));
//! let mut codes = vec![0x97u8, 0xAB, 0x68, 0x33];
//! codes.resize(16, 0x88);
//! let m = M0e4Matrix::from_parts(MatrixShape::new(1, 32), GroupSize::G32, codes, vec![s], vec![b])?;
//! assert_eq!(m.code(0, 1), 9);
//! assert_eq!(fp4::recipe::h_bits_f16(9), 0x3E40);
//! assert_eq!(fp4::recipe::h_bits_f32(9), 0x3FC8_0000);
//! let w1 = fp4::reference::dequantize(&m)[1];
//! assert_eq!(w1, s.to_f32() * 1.5625 + b.to_f32());
//! assert!((w1 - 0.0284195).abs() < 1e-6);
//! # Ok::<(), fp4::Fp4Error>(())
//! ```
//!
//! # The quantiser
//!
//! [`quantize_m0e4`] takes f32, f16 or bf16 rows ([`Weight`]). M0E4's levels `(s+b) + (s/16)·q`
//! form an affine 16-level grid, so each group searches for the step `d` and base `z` that
//! minimise its squared error, then stores `s = f16(16d)` and `b = f16(z - s)` and re-picks every
//! code against the *rounded* `s` and `b`. The search keeps the grid covering the group
//! (`z - d/2 ≤ min`, `z + 15.5d ≥ max`), so no weight is ever clipped and every weight ends
//! within half a step of its original: `|w - x| ≤ s/32 + 2^-10·(|s| + |b|)` (the second term
//! is what rounding `s` and `b` to f16 can shift the grid), which the property tests check.
//! Within that constraint it tries step candidates between `range/15` and `range/16`, then
//! refits `(d, z)` by least squares on the chosen codes (see [`SearchEffort`]); each candidate
//! is one vectorisable pass over the group, and the squared error follows from three sums in
//! closed form. Groups are quantised in parallel with rayon, with an AVX2+FMA copy of the loop
//! chosen at run time on x86-64 (same results either way).
//!
//! Errors ([`Fp4Error`]): K not a multiple of G, an empty shape, a shape whose `rows*cols`
//! overflows `usize`, a slice whose length is not `rows*cols`, NaN or infinite weights (naming row and column), and groups whose scale or
//! offset would overflow f16.
//!
//! # Error report
//!
//! `cargo run -p fp4 --release --example error_report` (1024×4096 synthetic matrices; RMS
//! error relative to the weights' RMS; max error relative to the largest |w|):
//!
//! | format | bits/w | Gaussian rel RMS | Student-t ν=5 | Student-t ν=3 | stories260K | stories260K max err / max\|w\| |
//! |---|---|---|---|---|---|---|
//! | FP16 rounding | 16 | 0.0002 | 0.0002 | 0.0002 | 0.0002 | 0.0003 |
//! | INT4 symmetric G32 (Q4_0) | 4.5 | 0.0859 | 0.1076 | 0.1277 | 0.0931 | 0.0647 |
//! | INT4 asymmetric min/max G32 (Q4_1) | 5 | 0.0782 | 0.0899 | 0.1004 | 0.0871 | 0.0467 |
//! | INT4 asymmetric, same search, G32 | 5 | 0.0730 | 0.0838 | 0.0923 | 0.0815 | 0.0432 |
//! | M0E4 min/max G32 | 5 | 0.0782 | 0.0899 | 0.1004 | 0.0871 | 0.0462 |
//! | **M0E4 searched G32** | 5 | **0.0730** | **0.0838** | **0.0923** | **0.0815** | 0.0433 |
//! | M0E4 searched G64 | 4.5 | 0.0847 | 0.1042 | 0.1218 | 0.0948 | 0.0469 |
//! | M0E4 searched G128 | 4.25 | 0.0946 | 0.1254 | 0.1565 | n/a | n/a |
//!
//! What it shows: M0E4 is exactly as accurate as asymmetric INT4 with the same search (both
//! are a 16-level affine grid; storing the offset as `b = z - s` in f16 costs nothing
//! measurable), so its speed-up in kernels is free in accuracy. The search lowers the RMS error
//! by 6–8 % against min/max; symmetric Q4_0 has 14–38 % more RMS error than searched M0E4 (it
//! wastes half its range on the side opposite the largest magnitude), and M0E4 at G=64 (4.5
//! bits, like Q4_0) is within 2 % of Q4_0 on Gaussian and stories260K weights and 3–5 % better
//! on heavy tails.
//! stories260K: the token embedding and every wq, wk, wv, wo, w1, w3 (K = dim = 64) qualify for
//! G=32 and G=64 (204 288 of 259 328 weights); the five w2 matrices (K = hidden = 172) and
//! everything at G=128 do not.
//!
//! # Speed
//!
//! Quantising with the default search (2 step candidates + up to 2 least-squares refits per
//! group; AVX2 + F16C loops picked at run time), `cargo bench -p bench --bench fp4`
//! (1024×4096 Gaussian matrix), pinned to two cores (`taskset -c 0,1`,
//! `RAYON_NUM_THREADS=2`) of an idle x86-64 Xeon (the lent device's host CPU), in M weights/s:
//!
//! | what | G=32 | G=64 | G=128 |
//! |---|---|---|---|
//! | M0E4, default search, f32 input | **238–261** | 337–363 | 524–586 |
//! | M0E4, default search, f16 input (F16C loads) | 236 | | |
//! | M0E4, min/max grid only | 546–647 | | |
//! | INT4 symmetric (Q4_0) | 507–531 | | |
//! | INT4 asymmetric, same search | 236–254 | | |
//! | reference `dequantize` | 1670 | 1901 | 1912 |
//! | reference `matvec` (f64 sums) | 874 | 890 | 813 |
//!
//! (Ranges: two runs.) On the shared 2-core dev box itself, with other helpers' builds
//! running (load average 6–8), the same bench gave 119 M weights/s at G=32, 134 at G=64, 204
//! at G=128, 109 for f16 input.
//!
//! One idle core: 144 M weights/s (G=32); two: a 7B model quantises in about 28 s.
//! `cargo run -p fp4 --release --example speed` prints throughput and error for every search
//! effort, to choose a different trade-off ([`quantize_m0e4_with`]).
//!
//! # Storage
//!
//! [`io`] (feature `io`, on by default) writes named matrices plus unquantised F16 tensors into
//! one safetensors file (codes U8 `[rows, cols/2]`, scales and offsets F16 `[rows, cols/G]`,
//! `__metadata__` `format = "m0e4"`, `format_version = "1"`, `group_size`) and loads them back
//! owned ([`io::read_tensors`]) or borrowed straight from the file's bytes ([`io::parse`]),
//! rejecting wrong versions, sizes and group sizes with errors that name the file and tensor.
//!
//! # API in brief
//!
//! * [`quantize_m0e4`] / [`quantize_m0e4_with`] → [`M0e4Matrix`] (accessors `codes`, `scales`,
//!   `offsets`, `row_codes`, `code`, `value`; [`M0e4Matrix::from_parts`] checks lengths).
//! * [`reference::dequantize`], [`reference::matvec`]: plain-Rust references for kernel tests.
//! * [`recipe`]: the bit recipe; [`packing`]: nibble order.
//! * [`baseline`]: symmetric (Q4_0) and asymmetric (Q4_1) INT4 in the same packing.
//! * [`stats`]: RMS / max error; [`io`]: safetensors.

#![deny(missing_docs)]

pub mod baseline;
mod error;
mod grid;
#[cfg(feature = "io")]
pub mod io;
mod matrix;
pub mod packing;
mod quantize;
pub mod recipe;
pub mod reference;
mod shape;
pub mod stats;

pub use error::Fp4Error;
pub use grid::SearchEffort;
pub use matrix::M0e4Matrix;
pub use quantize::{quantize_m0e4, quantize_m0e4_with, Weight};
pub use shape::{GroupSize, MatrixShape};
