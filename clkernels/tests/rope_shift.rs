//! `RopeShift` (`rope.cl`'s `rope_shift` and `rope_shift_table`): keys rotated at their old slot, stored in a
//! kvcache-layout buffer, then turned by `delta` positions on the device, must equal the same raw keys rotated at
//! `old + delta` by the plain-Rust reference (`fixtures::ops::rope_with_freqs`, f64), for both pairings, partial
//! rotary dims, theta and table frequencies, f32 and f16 caches; everything outside the view (other positions,
//! dimensions past `rotary_dim`) must be left bit for bit.
//!
//! Tolerances are relative to the norm `n` of each rotated pair (a rotation keeps it): f32 caches 1e-5 + 3e-4·n
//! (the device forms `delta * freq` in f32 with |delta| ≤ 300 here, and NVIDIA's exp2 is off by a few ulps, which
//! moves the angle by up to ~5e-5 rad, as in the forward rotary's test); f16 caches add two f16 roundings (the
//! stored key and the result): 1e-5 + (3e-4 + 2^-10)·n. A wrong pairing, frequency or sign errs by O(n).
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::attention::KvOperand;
use clkernels::kernels::rope::{RopeConfig, RopeShift, RopeStyle, RopeTable};
use clkernels::runtime::{DeviceBuffer, Gpu};
use common::{gpu, normal, rng, small_shapes};
use fixtures::ops;
use half::f16;
use kvcache::{KvDtype, KvLayout};
use rand::Rng;

/// One case: pairing, head and rotary width, frequencies (theta's or a table's), cache type, the slots to turn and
/// the delta. The key at slot `p` was rotated at position `base + p`.
struct Case {
    style: RopeStyle,
    head_dim: usize,
    rotary_dim: usize,
    theta: f32,
    table: bool,
    dtype: KvDtype,
    slots: std::ops::Range<usize>,
    base: usize,
    delta: i64,
}

fn ref_style(style: RopeStyle) -> ops::RopeStyle {
    match style {
        RopeStyle::Interleaved => ops::RopeStyle::Interleaved,
        RopeStyle::HalfSplit => ops::RopeStyle::HalfSplit,
    }
}

/// The partner of dimension `d` (< rotary_dim) in its rotated pair.
fn partner(style: RopeStyle, d: usize, rotary_dim: usize) -> usize {
    let half = rotary_dim / 2;
    match style {
        RopeStyle::Interleaved => d ^ 1,
        RopeStyle::HalfSplit if d < half => d + half,
        RopeStyle::HalfSplit => d - half,
    }
}

/// The cache buffer as f32 values, stored as `dtype` (f16 values as their bits).
enum Cache {
    F32(DeviceBuffer<f32>),
    F16(DeviceBuffer<u16>),
}

impl Cache {
    fn upload(gpu: &Gpu, values: &[f32], dtype: KvDtype) -> Self {
        match dtype {
            KvDtype::F32 => Cache::F32(DeviceBuffer::from_slice(gpu, values).unwrap()),
            KvDtype::F16 => {
                let bits: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
                Cache::F16(DeviceBuffer::from_slice(gpu, &bits).unwrap())
            }
        }
    }

    fn read(&self, gpu: &Gpu) -> Vec<f32> {
        match self {
            Cache::F32(b) => b.read(gpu).unwrap(),
            Cache::F16(b) => b
                .read(gpu)
                .unwrap()
                .into_iter()
                .map(|h| f16::from_bits(h).to_f32())
                .collect(),
        }
    }

    fn operand(&self, view: kvcache::KvView) -> KvOperand<'_> {
        match self {
            Cache::F32(b) => KvOperand::from_device_buffer(b, view),
            Cache::F16(b) => KvOperand::from_device_buffer(b, view),
        }
    }
}

fn run_case(gpu: &Gpu, rng: &mut rand::rngs::StdRng, case: &Case) {
    let (kv_heads, max_ctx) = if small_shapes() { (2, 24) } else { (3, 96) };
    let Case {
        style,
        head_dim,
        rotary_dim,
        theta,
        table,
        dtype,
        ref slots,
        base,
        delta,
    } = *case;
    let what = format!(
        "{style:?} hd{head_dim} rd{rotary_dim} {} {dtype:?} slots {slots:?} delta {delta}",
        if table { "table" } else { "theta" }
    );
    let layout = KvLayout {
        kv_heads,
        max_ctx,
        head_dim,
        dtype,
    };
    // Frequencies: theta's, or scaled ones no theta gives (every third pair slowed down, the rest jittered).
    let theta_freqs: Vec<f64> = (0..rotary_dim / 2)
        .map(|i| f64::from(theta).powf(-2.0 * i as f64 / rotary_dim as f64))
        .collect();
    let freqs32: Vec<f32> = theta_freqs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            if !table {
                f as f32
            } else if i % 3 == 0 {
                (f / 8.0) as f32
            } else {
                (f * rng.random_range(0.5..1.0)) as f32
            }
        })
        .collect();
    let freqs: Vec<f64> = freqs32.iter().map(|&f| f64::from(f)).collect();

    // Raw keys; the cache holds each one rotated at its slot (what the forward pass stored), rounded to the cache
    // type; the wanted result is the same raw key rotated at slot + delta.
    let raw = normal(rng, layout.buffer_elems() as usize, 1.0);
    let mut stored = raw.clone();
    let mut want = raw.clone();
    for h in 0..kv_heads {
        for p in 0..max_ctx {
            let at = layout.element_index(h, p) as usize;
            let head = &mut stored[at..at + head_dim];
            ops::rope_with_freqs(head, 1, head_dim, &freqs, ref_style(style), base + p);
            if slots.contains(&p) {
                let head = &mut want[at..at + head_dim];
                let new = usize::try_from((base + p) as i64 + delta).unwrap();
                ops::rope_with_freqs(head, 1, head_dim, &freqs, ref_style(style), new);
            }
        }
    }
    if dtype == KvDtype::F16 {
        stored
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v).to_f32());
    }
    // Outside the rotation the cache keeps what it holds.
    for h in 0..kv_heads {
        for p in 0..max_ctx {
            let at = layout.element_index(h, p) as usize;
            let from = if slots.contains(&p) { rotary_dim } else { 0 };
            want[at + from..at + head_dim].copy_from_slice(&stored[at + from..at + head_dim]);
        }
    }

    let cache = Cache::upload(gpu, &stored, dtype);
    let config = RopeConfig {
        head_dim,
        rotary_dim,
        theta,
        style,
    };
    let table = table.then(|| RopeTable::upload(gpu, &freqs32).unwrap());
    let shift = RopeShift::new(gpu, dtype).unwrap();
    let view = layout.positions_view(slots.start, slots.len());
    shift
        .enqueue(cache.operand(view), config, table.as_ref(), delta)
        .unwrap();
    let got = cache.read(gpu);

    let slack = match dtype {
        KvDtype::F32 => 3e-4,
        KvDtype::F16 => 3e-4 + 1.0 / 1024.0,
    };
    for h in 0..kv_heads {
        for p in 0..max_ctx {
            let at = layout.element_index(h, p) as usize;
            for d in 0..head_dim {
                let (g, w) = (got[at + d], want[at + d]);
                if !slots.contains(&p) || d >= rotary_dim {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{what}: head {h} position {p} dim {d} changed outside the rotation"
                    );
                    continue;
                }
                let other = want[at + partner(style, d, rotary_dim)];
                let norm = w.hypot(other);
                assert!(
                    (g - w).abs() <= 1e-5 + slack * norm,
                    "{what}: head {h} position {p} dim {d} is {g}, reference {w} (pair norm {norm})"
                );
            }
        }
    }
}

#[test]
fn shifted_keys_equal_keys_rotated_at_their_new_positions() {
    let gpu = gpu();
    let mut rng = rng("rope_shift");
    let (a, b) = if small_shapes() { (4, 20) } else { (4, 90) };
    let cases = [
        // A context shift's case: the keys after the kept ones were rotated `dropped` positions further on than
        // the slots they now sit in, and turn by -dropped.
        (
            RopeStyle::Interleaved,
            64,
            64,
            10000.0,
            false,
            KvDtype::F32,
            -37,
        ),
        (RopeStyle::HalfSplit, 80, 40, 1e6, false, KvDtype::F32, -64),
        (
            RopeStyle::HalfSplit,
            64,
            64,
            500000.0,
            true,
            KvDtype::F32,
            -5,
        ),
        (
            RopeStyle::Interleaved,
            48,
            16,
            10000.0,
            true,
            KvDtype::F16,
            -20,
        ),
        (
            RopeStyle::HalfSplit,
            32,
            32,
            10000.0,
            false,
            KvDtype::F16,
            -1,
        ),
        (
            RopeStyle::HalfSplit,
            64,
            48,
            10000.0,
            true,
            KvDtype::F16,
            -45,
        ),
    ];
    for (style, head_dim, rotary_dim, theta, table, dtype, delta) in cases {
        run_case(
            &gpu,
            &mut rng,
            &Case {
                style,
                head_dim,
                rotary_dim,
                theta,
                table,
                dtype,
                slots: a..b,
                base: usize::try_from(-delta).unwrap(),
                delta,
            },
        );
    }
    // Large deltas (angles of hundreds of radians) and a positive one: the rotation composes either way.
    for (base, delta) in [(400, -300), (0, 250)] {
        run_case(
            &gpu,
            &mut rng,
            &Case {
                style: RopeStyle::HalfSplit,
                head_dim: 64,
                rotary_dim: 64,
                theta: 10000.0,
                table: false,
                dtype: KvDtype::F32,
                slots: 0..b,
                base,
                delta,
            },
        );
    }
}
