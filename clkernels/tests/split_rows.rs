//! Tables split across buffers by rows ([`RowSplit`]): the embedding gather over the parts and the mat-vec run once
//! per part into sub-buffers of one output give exactly (bit for bit) what one launch over the whole table gives,
//! since each output is computed by the same kernel with the same arithmetic and order. Sub-buffers off the device's
//! alignment or outside their buffer are errors naming the numbers.
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::embedding::{Embedding, TableRows};
use clkernels::kernels::matvec::{DeviceF16Matrix, DeviceM0e4, MatvecF16, MatvecM0e4};
use clkernels::kernels::norm::RmsNormParams;
use clkernels::kernels::Residual;
use clkernels::runtime::{ClError, RowSplit, SplitLimits};
use common::*;
use fp4::{GroupSize, MatrixShape};
use half::f16;
use rand::Rng;

/// A split of `rows` rows into three or more parts on this device: the largest allocation set so small that each
/// part holds two quanta of rows at most.
fn small_split(gpu: &clkernels::runtime::Gpu, rows: usize, row_bytes: u64) -> RowSplit {
    let mut limits = gpu.split_limits();
    limits.max_alloc_bytes = 2 * limits.quantum() as u64 * row_bytes;
    let split = RowSplit::plan(rows, row_bytes, limits).unwrap();
    assert!(split.parts().len() >= 3, "{split:?}");
    split
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_split_embedding_gathers_exactly_what_the_whole_table_does() {
    let gpu = gpu();
    let mut rng = rng("split embedding");
    let emb = Embedding::new(&gpu).unwrap();
    let (vocab, dim) = (if small_shapes() { 300 } else { 700 }, 64);
    // Ids in every part, the last row and one past the vocabulary (clamped to the last row on the device).
    let mut ids: Vec<u32> = (0..20).map(|_| rng.random_range(0..vocab as u32)).collect();
    ids.extend([0, vocab as u32 - 1, vocab as u32 + 5]);
    let idd = upload(&gpu, &ids);
    let scale = (dim as f32).sqrt();

    let table: Vec<f16> = normal(&mut rng, vocab * dim, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let shape = MatrixShape::new(vocab, dim);
    let whole = DeviceF16Matrix::upload(&gpu, &table, shape).unwrap();
    let mut want = poisoned(&gpu, ids.len() * dim);
    emb.enqueue_f16(&whole, &idd, ids.len(), &mut want, scale)
        .unwrap();
    let split = small_split(&gpu, vocab, 2 * dim as u64);
    let mut got = poisoned(&gpu, ids.len() * dim);
    for p in split.parts() {
        let part = &table[p.first * dim..(p.first + p.rows) * dim];
        let t = DeviceF16Matrix::upload(&gpu, part, MatrixShape::new(p.rows, dim)).unwrap();
        let rows = TableRows {
            vocab,
            first: p.first,
        };
        emb.enqueue_f16_rows(&t, rows, &idd, ids.len(), &mut got, scale)
            .unwrap();
    }
    assert_eq!(
        bits(&got.read(&gpu).unwrap()),
        bits(&want.read(&gpu).unwrap()),
        "f16"
    );

    let m = random_m0e4(&mut rng, vocab, dim, GroupSize::G32);
    let whole = DeviceM0e4::upload(&gpu, &m).unwrap();
    let mut want = poisoned(&gpu, ids.len() * dim);
    emb.enqueue_m0e4(&whole, &idd, ids.len(), &mut want, scale)
        .unwrap();
    let mut got = poisoned(&gpu, ids.len() * dim);
    for p in split.parts() {
        let t = DeviceM0e4::upload_rows(&gpu, &m, p.range()).unwrap();
        let rows = TableRows {
            vocab,
            first: p.first,
        };
        emb.enqueue_m0e4_rows(&t, rows, &idd, ids.len(), &mut got, scale)
            .unwrap();
    }
    assert_eq!(
        bits(&got.read(&gpu).unwrap()),
        bits(&want.read(&gpu).unwrap()),
        "m0e4"
    );
    // A part that runs past the vocabulary is refused.
    let t = DeviceM0e4::upload_rows(&gpu, &m, 0..64).unwrap();
    let bad = TableRows {
        vocab,
        first: vocab - 10,
    };
    let e = emb
        .enqueue_m0e4_rows(&t, bad, &idd, ids.len(), &mut got, scale)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("64 rows") && e.contains(&vocab.to_string()),
        "{e}"
    );
}

#[test]
fn a_head_split_by_rows_writes_its_logits_exactly_through_sub_buffers() {
    let gpu = gpu();
    let mut rng = rng("split head");
    let (vocab, hidden) = (if small_shapes() { 320 } else { 1000 }, 128);
    let x = upload(&gpu, &normal(&mut rng, hidden, 1.0));
    let norm_w = upload(&gpu, &normal(&mut rng, hidden, 0.3));
    let params = RmsNormParams {
        eps: 1e-6,
        weight_offset: 1.0,
    };

    // M0E4 with the RMSNorm fused, as the decode head runs it.
    let mv = MatvecM0e4::new(&gpu).unwrap();
    let m = random_m0e4(&mut rng, vocab, hidden, GroupSize::G32);
    let whole = DeviceM0e4::upload(&gpu, &m).unwrap();
    let mut want = poisoned(&gpu, vocab);
    mv.enqueue_normed(&whole, &x, &norm_w, params, &mut want, Residual::None)
        .unwrap();
    let split = small_split(&gpu, vocab, hidden as u64 / 2);
    let got = poisoned(&gpu, vocab);
    for p in split.parts() {
        let w = DeviceM0e4::upload_rows(&gpu, &m, p.range()).unwrap();
        let mut slice = got.sub_buffer(&gpu, p.first, p.rows).unwrap();
        mv.enqueue_normed(&w, &x, &norm_w, params, &mut slice, Residual::None)
            .unwrap();
    }
    assert_eq!(
        bits(&got.read(&gpu).unwrap()),
        bits(&want.read(&gpu).unwrap()),
        "m0e4"
    );

    // f16, as an unquantised head runs it.
    let mv = MatvecF16::new(&gpu).unwrap();
    let table: Vec<f16> = normal(&mut rng, vocab * hidden, 0.1)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let whole = DeviceF16Matrix::upload(&gpu, &table, MatrixShape::new(vocab, hidden)).unwrap();
    let mut want = poisoned(&gpu, vocab);
    mv.enqueue(&whole, &x, &mut want, Residual::None).unwrap();
    let split = small_split(&gpu, vocab, 2 * hidden as u64);
    let got = poisoned(&gpu, vocab);
    for p in split.parts() {
        let part = &table[p.first * hidden..(p.first + p.rows) * hidden];
        let w = DeviceF16Matrix::upload(&gpu, part, MatrixShape::new(p.rows, hidden)).unwrap();
        let mut slice = got.sub_buffer(&gpu, p.first, p.rows).unwrap();
        mv.enqueue(&w, &x, &mut slice, Residual::None).unwrap();
    }
    assert_eq!(
        bits(&got.read(&gpu).unwrap()),
        bits(&want.read(&gpu).unwrap()),
        "f16"
    );
}

#[test]
fn sub_buffers_off_the_alignment_or_outside_the_buffer_are_refused() {
    let gpu = gpu();
    let buf = poisoned(&gpu, 4096);
    let limits: SplitLimits = gpu.split_limits();
    let align = (limits.base_addr_align_bits as usize / 8).max(1);
    assert!(buf.sub_buffer(&gpu, 0, 4096).is_ok());
    let e = buf.sub_buffer(&gpu, 4000, 200).unwrap_err();
    assert!(matches!(e, ClError::InvalidSubBuffer { .. }), "{e}");
    assert!(buf.sub_buffer(&gpu, 0, 0).is_err());
    if align > 4 {
        let e = buf.sub_buffer(&gpu, 1, 16).unwrap_err().to_string();
        assert!(
            e.contains("alignment") && e.contains(&align.to_string()),
            "{e}"
        );
    }
}

#[test]
fn without_the_qcom_large_buffer_extension_a_large_buffer_keeps_the_allocation_limit() {
    use clkernels::runtime::{DeviceBuffer, DeviceProfile, GpuOptions, ProfileChoice};
    // phone-min states the extension absent, as every development machine lacks it.
    let phone = clkernels::runtime::Gpu::open_with(&GpuOptions {
        profile: ProfileChoice::Use(Box::new(DeviceProfile::phone_min().unwrap())),
        ..GpuOptions::default()
    })
    .unwrap();
    assert!(!phone.caps().qcom_large_buffer);
    let max = phone.caps().max_alloc_bytes;
    let e = DeviceBuffer::<u8>::new_large(&phone, max as usize + 1).unwrap_err();
    assert!(
        matches!(e, ClError::AllocationTooLarge { bytes, .. } if bytes == max + 1),
        "{e}"
    );
    let small = DeviceBuffer::from_slice_large(&phone, &[1.0f32, 2.0, 3.0]).unwrap();
    assert_eq!(small.read(&phone).unwrap(), vec![1.0, 2.0, 3.0]);
}
