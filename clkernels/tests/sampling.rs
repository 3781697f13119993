//! The device sampler (`Sampling::draw`) against the plain f64 chain of `fixtures::sampling`, on random logits.
//!
//! Tolerances: the kept tokens are a prefix of the chain's order whose draws lie within total-variation distance
//! 1e-4 of the reference's (top-p's and min-p's cuts are decided on f32 sums, so a token whose weight is about the
//! sums' rounding may fall on the other side: such cases are counted and printed); their weight and the normaliser
//! within 5e-5 relative (f32 sums over up to 151936 weights, each an `exp` a few ulps off); the drawn token's slice
//! of the cumulative weight (in token order) within 5e-5 of the kept weight of the draw's target.
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::sampling::{
    DrawOutcome, DrawParams, DrawScratch, Sampling, Uniform, NO_TOKEN,
};
use clkernels::runtime::{DeviceBuffer, Gpu};
use common::*;
use fixtures::sampling::{self as reference, ChainParams};
use rand::rngs::StdRng;
use rand::Rng;

const REL: f64 = 5e-5;
const TV: f64 = 1e-4;

/// Logits of one of four shapes: a trained model's (broad body, a few strong tokens), flat (high entropy), many
/// exact ties (values on a 1/64 grid: up to some hundreds share a value, fewer than the device sorts), and a
/// trained shape with masked (-inf) tokens.
fn logits(rng: &mut StdRng, n: usize, shape: usize) -> Vec<f32> {
    match shape {
        0 => {
            let mut l = normal(rng, n, 2.0);
            for _ in 0..8 {
                l[rng.random_range(0..n)] = rng.random_range(8.0..16.0);
            }
            l
        }
        1 => normal(rng, n, 0.5),
        2 => normal(rng, n, 1.5)
            .into_iter()
            .map(|v| (v * 64.0).round() / 64.0)
            .collect(),
        _ => {
            let mut l = normal(rng, n, 2.0);
            for _ in 0..n / 3 {
                l[rng.random_range(0..n)] = f32::NEG_INFINITY;
            }
            l
        }
    }
}

struct Device {
    gpu: Gpu,
    s: Sampling,
    scratch: DrawScratch,
    out: DeviceBuffer<u32>,
}

impl Device {
    fn new() -> Self {
        let gpu = gpu();
        let s = Sampling::new(&gpu).unwrap();
        let scratch = DrawScratch::new(&gpu, 64).unwrap();
        let out = DeviceBuffer::new(&gpu, 1).unwrap();
        Device {
            gpu,
            s,
            scratch,
            out,
        }
    }

    fn draw(
        &mut self,
        x: &mut DeviceBuffer<f32>,
        n: usize,
        p: &ChainParams,
        pen: &[u32],
        u: f32,
    ) -> u32 {
        let params =
            DrawParams::new(p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty).unwrap();
        self.scratch.set_penalised(&self.gpu, pen).unwrap();
        let u = Uniform::new(u).unwrap();
        self.s
            .draw(x, n, &params, u, &mut self.scratch, &mut self.out)
            .unwrap();
        self.out.read(&self.gpu).unwrap()[0]
    }
}

#[test]
fn kept_tokens_and_draws_match_the_f64_chain() {
    let mut rng = rng("sample chain");
    let mut dev = Device::new();
    let sizes: &[usize] = if small_shapes() {
        &[300, 3000]
    } else {
        &[1000, 5000, 49152, 151936]
    };
    let rounds = if small_shapes() { 4 } else { 12 };
    let (mut cases, mut differ, mut passes, mut worst) = (0, 0, 0u32, 0.0f64);
    for &n in sizes {
        for round in 0..rounds {
            let shape = round % 4;
            let x = logits(&mut rng, n, shape);
            let p = ChainParams {
                temperature: [0.3, 0.8, 1.0, 1.7][rng.random_range(0..4)],
                top_k: [0, 0, 1, 40, 3000][rng.random_range(0..5)],
                top_p: [1.0, 0.9, 0.5, 0.99][rng.random_range(0..4)],
                min_p: [0.0, 0.0, 0.05][rng.random_range(0..3)],
                repeat_penalty: [1.0, 1.3][rng.random_range(0..2)],
            };
            let pen: Vec<u32> = if p.repeat_penalty == 1.0 {
                Vec::new()
            } else {
                (0..64)
                    .map(|_| rng.random_range(0..n as u32 + 10))
                    .collect()
            };
            let u: f32 = rng.random();
            let what = format!("vocab {n}, shape {shape}, {p:?}, u {u}");
            let mut xd = upload(&dev.gpu, &x);
            let t = dev.draw(&mut xd, n, &p, &pen, u);
            assert_eq!(
                xd.read(&dev.gpu).unwrap(),
                x,
                "{what}: the logits were not restored"
            );
            let info = dev.scratch.info(&dev.gpu).unwrap();
            let want = reference::rank(&x, &pen, &p, 0.0).unwrap();
            cases += 1;
            passes += info.narrowing_passes;
            assert_eq!(info.outcome, DrawOutcome::Drawn, "{what}: {info:?}");
            let kept = info.kept as usize;
            assert!((1..=want.order.len()).contains(&kept), "{what}: {info:?}");
            let tv = want.total_variation(kept, want.keep);
            assert!(
                tv <= TV,
                "{what}: keeps {kept}, the reference {} (distance {tv:e}): {info:?}",
                want.keep
            );
            if kept != want.keep {
                differ += 1;
                worst = worst.max(tv);
            }
            let d = want.prefix(kept);
            let close = |got: f32, want: f64| (f64::from(got) - want).abs() <= REL * want;
            assert!(
                close(info.kept_mass, d.mass()),
                "{what}: kept mass {info:?} vs {}",
                d.mass()
            );
            assert!(
                close(info.normaliser, want.normaliser),
                "{what}: normaliser {info:?} vs {}",
                want.normaliser
            );
            // Without min-p, the last kept token is the cutoff the device reports (when it cut at all).
            let finite = x.iter().filter(|l| **l > f32::NEG_INFINITY).count();
            let cuts = (p.top_k > 0 && p.top_k < finite) || p.top_p < 1.0;
            if p.min_p == 0.0 {
                let want_cut = cuts.then(|| want.order[kept - 1]);
                assert_eq!(info.cutoff.map(|c| c.1), want_cut, "{what}: {info:?}");
            }
            let allowed = d.draws_near(f64::from(u), REL * d.mass());
            assert!(
                allowed.contains(&t),
                "{what}: drew {t}, the reference allows {allowed:?}"
            );
        }
    }
    eprintln!(
        "{cases} cases, {passes} narrowing passes in all; {differ} kept a boundary token the reference did not or \
         the other way (largest distance {worst:e})"
    );
}

#[test]
fn greedy_follows_the_penalty_and_ties_break_by_id() {
    let mut rng = rng("sample greedy");
    let mut dev = Device::new();
    let n = if small_shapes() { 500 } else { 32000 };
    let mut x = normal(&mut rng, n, 2.0);
    let top = x.iter().copied().fold(f32::MIN, f32::max) + 1.0;
    x[n - 3] = top;
    x[n / 2] = top;
    let mut xd = upload(&dev.gpu, &x);
    let p = |penalty| ChainParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: penalty,
    };
    assert_eq!(dev.draw(&mut xd, n, &p(1.0), &[], 0.3), (n / 2) as u32);
    let pen = [(n / 2) as u32, 7, 7, n as u32 + 5];
    let t = dev.draw(&mut xd, n, &p(2.0), &pen, 0.3);
    assert_eq!(Some(t), reference::greedy(&x, &pen, 2.0));
    assert_eq!(t, (n - 3) as u32);
    assert_eq!(
        dev.scratch.info(&dev.gpu).unwrap().outcome,
        DrawOutcome::Greedy
    );
    assert_eq!(xd.read(&dev.gpu).unwrap(), x);
}

/// Where the device cannot decide it says so, and leaves the logits as they were.
#[test]
fn bad_logits_and_unresolvable_ties_hand_the_choice_back() {
    let mut dev = Device::new();
    let p = ChainParams {
        temperature: 1.0,
        top_k: 100,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.5,
    };
    let n = 3000;
    let cases = [
        ("NaN", {
            let mut x = vec![0.5f32; n];
            x[17] = f32::NAN;
            x
        }),
        ("+inf", {
            let mut x = vec![0.5f32; n];
            x[2] = f32::INFINITY;
            x
        }),
        ("all -inf", vec![f32::NEG_INFINITY; n]),
        // 3000 equal logits with top-k 100: more ties at the cutoff than the device sorts.
        ("3000 ties", vec![0.25f32; n]),
    ];
    for (what, x) in cases {
        let mut xd = upload(&dev.gpu, &x);
        assert_eq!(
            dev.draw(&mut xd, n, &p, &[1, 2, 3], 0.5),
            NO_TOKEN,
            "{what}"
        );
        let info = dev.scratch.info(&dev.gpu).unwrap();
        let want = if what == "3000 ties" {
            DrawOutcome::Unresolved
        } else {
            DrawOutcome::BadLogits
        };
        assert_eq!(info.outcome, want, "{what}");
        let back = xd.read(&dev.gpu).unwrap();
        assert!(
            back.iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what}: logits changed"
        );
    }
    // 1500 ties fit: top-k 100 keeps the 100 lowest ids among them.
    let mut x = vec![-3.0f32; n];
    for v in x.iter_mut().skip(700).take(1500) {
        *v = 0.25;
    }
    let mut xd = upload(&dev.gpu, &x);
    let p = ChainParams {
        repeat_penalty: 1.0,
        ..p
    };
    let t = dev.draw(&mut xd, n, &p, &[], 0.999);
    assert_eq!(t, 799);
    let info = dev.scratch.info(&dev.gpu).unwrap();
    assert_eq!((info.kept, info.cutoff), (100, Some((0.25, 799))));
}

#[test]
fn bad_settings_are_refused() {
    assert!(DrawParams::new(-1.0, 0, 1.0, 0.0, 1.0).is_err());
    assert!(DrawParams::new(f32::NAN, 0, 1.0, 0.0, 1.0).is_err());
    assert!(DrawParams::new(1.0, 0, 0.0, 0.0, 1.0).is_err());
    assert!(DrawParams::new(1.0, 0, 1.0, 1.5, 1.0).is_err());
    assert!(DrawParams::new(1.0, 0, 1.0, 0.0, 0.0).is_err());
    assert!(DrawParams::new(1.0, usize::MAX, 1.0, 0.0, 1.0).is_ok());
    assert!(Uniform::new(1.0).is_err());
    assert!(Uniform::new(-0.1).is_err());
    let mut dev = Device::new();
    let mut x = upload(&dev.gpu, &[1.0f32; 10]);
    let params = DrawParams::new(1.0, 0, 1.0, 0.0, 1.0).unwrap();
    let u = Uniform::new(0.5).unwrap();
    assert!(dev
        .s
        .draw(&mut x, 11, &params, u, &mut dev.scratch, &mut dev.out)
        .is_err());
    assert!(dev
        .s
        .draw(&mut x, 0, &params, u, &mut dev.scratch, &mut dev.out)
        .is_err());
}
