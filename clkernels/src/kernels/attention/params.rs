//! The scalar arguments of `attention.cl`'s kernels as `#[repr(C)]` structs, each mirroring a `typedef struct` of
//! the `.cl` file field for field (every field is 4 bytes, so both sides lay them out alike), and the checks that
//! turn a call into them. Pure: a call is checked without a device.

use bytemuck::{Pod, Zeroable};
use kvcache::KvView;

use super::super::rope::{HeadsLayout, RopeConfig};
use super::super::{check_count, shape_error, to_u32, KernelError};
use super::operands::{kv_ring, AttentionScores, AttentionShape, FreshToken, KvOperand};
use super::MAX_HEAD_DIM;

/// `attn_params` of `attn_partial` and `attn_rows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub(super) struct AttnParams {
    /// Element offset of the queries (token 0, head 0) in q's buffer, and elements between tokens.
    pub q_off: u32,
    pub q_stride: u32,
    /// The cache views' layout (K and V share it).
    pub kv_off: u32,
    pub head_stride: u32,
    pub pos_stride: u32,
    pub past: u32,
    pub heads: u32,
    /// Query heads per KV head.
    pub group: u32,
    pub head_dim: u32,
    /// The plan: positions per split, splits per (token, head).
    pub chunk: u32,
    pub splits: u32,
    pub scale: f32,
    /// 1 when the decode token's K and V come from q's fused QKV row (see `FreshToken`), else 0 and the
    /// fields up to `rope_style` are unused.
    pub fresh: u32,
    pub k_src_off: u32,
    pub v_src_off: u32,
    pub rotary_dim: u32,
    pub log2_theta: f32,
    pub rope_style: u32,
    /// Sliding window in positions (0: none), and the soft-cap of the scores (0: none).
    pub window: u32,
    pub softcap: f32,
    /// The cache views' ring (`kvcache::KvWrap`): slots and the slot of position 0 (0, 0: a linear cache).
    pub ring: u32,
    pub ring_first: u32,
}

/// `kv_write_params` of `kv_write`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub(super) struct KvWriteParams {
    pub src_off: u32,
    pub src_stride: u32,
    /// The destination view's layout.
    pub dst_off: u32,
    pub head_stride: u32,
    pub pos_stride: u32,
    pub head_dim: u32,
    /// 0 for V (no rotation).
    pub rotary_dim: u32,
    pub log2_theta: f32,
    /// Position of the first token written.
    pub past: u32,
    pub style: u32,
    /// The destination's ring: slots and the slot of its first position (0, 0: linear).
    pub ring: u32,
    pub ring_first: u32,
}

/// `qkv_rope_write_params` of `qkv_rope_write`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub(super) struct QkvRopeWriteParams {
    /// Offsets of the q, k and v parts in the fused QKV buffer, and its token stride.
    pub q_off: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub stride: u32,
    /// The destination views' layout (K and V share it).
    pub dst_off: u32,
    pub head_stride: u32,
    pub pos_stride: u32,
    pub head_dim: u32,
    pub rotary_dim: u32,
    pub log2_theta: f32,
    /// Position of the first token written.
    pub past: u32,
    pub style: u32,
    pub heads: u32,
    pub kv_heads: u32,
    /// The destinations' ring: slots and the slot of their first position (0, 0: linear).
    pub ring: u32,
    pub ring_first: u32,
}

/// The `(offset, head stride, position stride)` of a view as the kernels take them.
fn view_strides(kernel: &'static str, view: &KvView) -> Result<[u32; 3], KernelError> {
    Ok([
        to_u32(kernel, "kv offset", view.offset_elems as usize)?,
        to_u32(kernel, "head stride", view.head_stride_elems as usize)?,
        to_u32(
            kernel,
            "position stride",
            view.position_stride_elems as usize,
        )?,
    ])
}

/// Checks an attention call (`q` holds `q_len` values, `out` `out_len`) and returns its parameters, less the
/// plan's `chunk` and `splits`.
#[allow(clippy::too_many_arguments)] // the call's operands, as `Attention::enqueue_with_fresh` takes them
pub(super) fn check_attention(
    q_len: usize,
    q_layout: HeadsLayout,
    fresh: Option<FreshToken>,
    k: &KvOperand<'_>,
    v: &KvOperand<'_>,
    shape: AttentionShape,
    scores: AttentionScores,
    out_len: usize,
) -> Result<AttnParams, KernelError> {
    const K: &str = "attention";
    let AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    } = shape;
    if seq == 0 || heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(shape_error(
            K,
            format!("bad shape {shape:?} (heads must be a multiple of kv_heads)"),
        ));
    }
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(shape_error(
            K,
            format!("head_dim {head_dim} must be in 1..={MAX_HEAD_DIM}"),
        ));
    }
    if q_layout.heads != heads || q_layout.seq != seq {
        return Err(shape_error(
            K,
            format!("q layout {q_layout:?} does not match {shape:?}"),
        ));
    }
    check_count(K, "q", q_len, q_layout.end(head_dim))?;
    check_count(K, "out", out_len, seq * heads * head_dim)?;
    let kv = k.view;
    for (name, op) in [("k", k), ("v", v)] {
        op.check(K, name)?;
        let w = op.view;
        if w.first_position != 0
            || w.positions < past + seq
            || w.heads != kv_heads
            || w.head_dim != head_dim
        {
            return Err(shape_error(
                K,
                format!(
                    "{name} view {w:?} must start at position 0 and cover {} positions of {kv_heads} heads of \
                     {head_dim}",
                    past + seq
                ),
            ));
        }
        if (
            w.offset_elems,
            w.head_stride_elems,
            w.position_stride_elems,
            w.dtype,
            w.wrap,
        ) != (
            kv.offset_elems,
            kv.head_stride_elems,
            kv.position_stride_elems,
            kv.dtype,
            kv.wrap,
        ) {
            return Err(shape_error(K, "k and v views differ in layout"));
        }
    }
    let [kv_off, head_stride, pos_stride] = view_strides(K, &kv)?;
    let AttentionScores {
        scale,
        softcap,
        window,
    } = scores;
    if !scale.is_finite() {
        return Err(shape_error(K, format!("score scale {scale} is not finite")));
    }
    if let Some(cap) = softcap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(shape_error(
            K,
            format!("soft-cap {cap} must be positive and finite"),
        ));
    }
    if window == Some(0) {
        return Err(shape_error(
            K,
            "a sliding window of 0 positions sees nothing",
        ));
    }
    // A ring holds the window of every token of the step only if window + seq - 1 positions fit its slots.
    let ring_keys = window.map_or(past + seq, |w| w.min(past + 1) + seq - 1);
    if kv.wrap.is_some() && window.is_none() {
        return Err(shape_error(
            K,
            "a ring cache needs a sliding window: it holds only the latest positions",
        ));
    }
    let [ring, ring_first] = kv_ring(K, &kv, ring_keys)?;
    let mut params = AttnParams {
        q_off: to_u32(K, "q offset", q_layout.offset)?,
        q_stride: to_u32(K, "q token stride", q_layout.token_stride)?,
        kv_off,
        head_stride,
        pos_stride,
        past: to_u32(K, "past", past)?,
        heads: to_u32(K, "heads", heads)?,
        group: to_u32(K, "group", heads / kv_heads)?,
        head_dim: to_u32(K, "head_dim", head_dim)?,
        chunk: 0,
        splits: 1,
        scale,
        // A window as long as the context masks nothing, so any larger one is clamped rather than refused.
        window: window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
        softcap: softcap.unwrap_or(0.0),
        ring,
        ring_first,
        ..AttnParams::default()
    };
    if let Some(f) = fresh {
        if seq != 1 {
            return Err(shape_error(
                K,
                format!("a fresh token needs a one-token step, not {seq}"),
            ));
        }
        f.rope.validate(K)?;
        for (name, l) in [("fresh k", &f.k), ("fresh v", &f.v)] {
            if l.heads != kv_heads || l.seq != 1 || l.token_stride != q_layout.token_stride {
                return Err(shape_error(
                    K,
                    format!(
                        "{name} layout {l:?} is not the {kv_heads}-head part of q's fused QKV row"
                    ),
                ));
            }
            check_count(K, name, q_len, l.end(head_dim))?;
        }
        if f.rope.head_dim != head_dim {
            return Err(shape_error(K, "rope head_dim differs from the attention's"));
        }
        params.fresh = 1;
        params.k_src_off = to_u32(K, "k offset", f.k.offset)?;
        params.v_src_off = to_u32(K, "v offset", f.v.offset)?;
        params.rotary_dim = to_u32(K, "rotary_dim", f.rope.rotary_dim)?;
        params.log2_theta = f.rope.log2_theta();
        params.rope_style = f.rope.style.code();
    }
    Ok(params)
}

/// Checks a K/V append (`src` holds `src_len` values) and returns its parameters, or `None` when it writes no
/// position.
pub(super) fn check_kv_write(
    src_len: usize,
    src_layout: HeadsLayout,
    dst: &KvOperand<'_>,
    rope: Option<RopeConfig>,
    first_position: usize,
) -> Result<Option<KvWriteParams>, KernelError> {
    const K: &str = "kv_write";
    let w = dst.view;
    dst.check(K, "destination")?;
    if w.heads != src_layout.heads || w.positions != src_layout.seq {
        return Err(shape_error(
            K,
            format!("destination view {w:?} does not match the source {src_layout:?}"),
        ));
    }
    check_count(K, "src", src_len, src_layout.end(w.head_dim))?;
    let (rotary_dim, log2_theta, style) = match rope {
        Some(r) => {
            r.validate(K)?;
            if r.head_dim != w.head_dim {
                return Err(shape_error(K, "rope head_dim differs from the cache's"));
            }
            (r.rotary_dim, r.log2_theta(), r.style.code())
        }
        None => (0, 0.0, 0),
    };
    if w.positions == 0 {
        return Ok(None);
    }
    let [dst_off, head_stride, pos_stride] = view_strides(K, &w)?;
    let [ring, ring_first] = kv_ring(K, &w, w.positions)?;
    Ok(Some(KvWriteParams {
        ring,
        ring_first,
        src_off: to_u32(K, "src offset", src_layout.offset)?,
        src_stride: to_u32(K, "src token stride", src_layout.token_stride)?,
        dst_off,
        head_stride,
        pos_stride,
        head_dim: to_u32(K, "head_dim", w.head_dim)?,
        rotary_dim: to_u32(K, "rotary_dim", rotary_dim)?,
        log2_theta,
        past: to_u32(K, "first_position", first_position)?,
        style,
    }))
}

/// The q, k and v parts of a fused QKV output (`qkv_len` values) and the step's K and V write views.
pub(super) struct QkvParts<'a> {
    pub qkv_len: usize,
    pub q: HeadsLayout,
    pub k: HeadsLayout,
    pub v: HeadsLayout,
    pub k_dst: &'a KvOperand<'a>,
    pub v_dst: &'a KvOperand<'a>,
}

/// Checks a fused rotary + append and returns its parameters, or `None` when it has no token.
pub(super) fn check_qkv_rope_write(
    parts: &QkvParts<'_>,
    rope: RopeConfig,
    first_position: usize,
) -> Result<Option<QkvRopeWriteParams>, KernelError> {
    const K: &str = "qkv_rope_write";
    let QkvParts {
        qkv_len,
        q,
        k,
        v,
        k_dst,
        v_dst,
    } = *parts;
    k_dst.check(K, "K destination")?;
    v_dst.check(K, "V destination")?;
    let (kw, vw) = (k_dst.view, v_dst.view);
    if (
        kw.offset_elems,
        kw.head_stride_elems,
        kw.position_stride_elems,
        kw.positions,
        kw.heads,
        kw.head_dim,
        kw.dtype,
        kw.wrap,
    ) != (
        vw.offset_elems,
        vw.head_stride_elems,
        vw.position_stride_elems,
        vw.positions,
        vw.heads,
        vw.head_dim,
        vw.dtype,
        vw.wrap,
    ) {
        return Err(shape_error(K, "K and V destination views differ in layout"));
    }
    if q.token_stride != k.token_stride
        || k.token_stride != v.token_stride
        || q.seq != k.seq
        || k.seq != v.seq
        || k.heads != v.heads
    {
        return Err(shape_error(
            K,
            format!("q {q:?}, k {k:?} and v {v:?} are not the parts of one fused QKV output"),
        ));
    }
    if kw.heads != k.heads || kw.positions != k.seq {
        return Err(shape_error(
            K,
            format!("destination view {kw:?} does not match the source {k:?}"),
        ));
    }
    rope.validate(K)?;
    if rope.head_dim != kw.head_dim {
        return Err(shape_error(K, "rope head_dim differs from the cache's"));
    }
    let head_dim = kw.head_dim;
    for (name, l) in [("q", &q), ("k", &k), ("v", &v)] {
        check_count(K, name, qkv_len, l.end(head_dim))?;
    }
    if k.seq == 0 {
        return Ok(None);
    }
    let [dst_off, head_stride, pos_stride] = view_strides(K, &kw)?;
    let [ring, ring_first] = kv_ring(K, &kw, kw.positions)?;
    Ok(Some(QkvRopeWriteParams {
        ring,
        ring_first,
        q_off: to_u32(K, "q offset", q.offset)?,
        k_off: to_u32(K, "k offset", k.offset)?,
        v_off: to_u32(K, "v offset", v.offset)?,
        stride: to_u32(K, "token stride", q.token_stride)?,
        dst_off,
        head_stride,
        pos_stride,
        head_dim: to_u32(K, "head_dim", head_dim)?,
        rotary_dim: to_u32(K, "rotary_dim", rope.rotary_dim)?,
        log2_theta: rope.log2_theta(),
        past: to_u32(K, "first_position", first_position)?,
        style: rope.style.code(),
        heads: to_u32(K, "heads", q.heads)?,
        kv_heads: to_u32(K, "kv_heads", k.heads)?,
    }))
}

#[cfg(test)]
mod tests {
    use kvcache::{KvDtype, KvLayout};

    use super::super::super::rope::RopeStyle;
    use super::*;

    const SHAPE: AttentionShape = AttentionShape {
        seq: 1,
        past: 9,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
    };

    fn layout() -> KvLayout {
        KvLayout {
            kv_heads: 2,
            max_ctx: 16,
            head_dim: 64,
            dtype: KvDtype::F16,
        }
    }

    fn operand(view: KvView) -> KvOperand<'static> {
        let bytes = layout().buffer_bytes() as usize;
        KvOperand::from_sized_mem(std::ptr::null_mut(), bytes, view)
    }

    fn heads(offset: usize, heads: usize) -> HeadsLayout {
        HeadsLayout {
            offset,
            token_stride: 8 * 64,
            heads,
            seq: 1,
        }
    }

    const S1: AttentionScores = AttentionScores {
        scale: 1.0,
        softcap: None,
        window: None,
    };

    const ROPE: RopeConfig = RopeConfig {
        head_dim: 64,
        rotary_dim: 32,
        theta: 10000.0,
        style: RopeStyle::HalfSplit,
    };

    #[test]
    fn struct_sizes_match_the_kernels_field_counts() {
        // Every field is 4 bytes; attention.cl's structs have 22, 12 and 16 fields.
        assert_eq!(std::mem::size_of::<AttnParams>(), 22 * 4);
        assert_eq!(std::mem::size_of::<KvWriteParams>(), 12 * 4);
        assert_eq!(std::mem::size_of::<QkvRopeWriteParams>(), 16 * 4);
    }

    #[test]
    fn attention_calls_become_parameters() {
        let view = layout().positions_view(0, 10);
        let (k, v) = (operand(view), operand(view));
        let fresh = FreshToken {
            k: heads(4 * 64, 2),
            v: heads(6 * 64, 2),
            rope: ROPE,
        };
        let p = check_attention(
            8 * 64,
            heads(0, 4),
            Some(fresh),
            &k,
            &v,
            SHAPE,
            AttentionScores {
                scale: 0.125,
                softcap: Some(30.0),
                window: Some(4096),
            },
            4 * 64,
        )
        .expect("a valid call");
        assert_eq!(
            p,
            AttnParams {
                q_off: 0,
                q_stride: 512,
                kv_off: 0,
                head_stride: 16 * 64,
                pos_stride: 64,
                past: 9,
                heads: 4,
                group: 2,
                head_dim: 64,
                chunk: 0,
                splits: 1,
                scale: 0.125,
                fresh: 1,
                k_src_off: 256,
                v_src_off: 384,
                rotary_dim: 32,
                log2_theta: 10000f32.log2(),
                rope_style: 1,
                window: 4096,
                softcap: 30.0,
                ring: 0,
                ring_first: 0,
            }
        );
        let plain = check_attention(8 * 64, heads(0, 4), None, &k, &v, SHAPE, S1, 4 * 64)
            .expect("a valid call");
        assert_eq!((plain.fresh, plain.rotary_dim, plain.k_src_off), (0, 0, 0));
        assert_eq!((plain.window, plain.softcap), (0, 0.0));
        // A window of nothing, a cap that is not a positive number.
        for bad in [
            AttentionScores {
                window: Some(0),
                ..S1
            },
            AttentionScores {
                softcap: Some(0.0),
                ..S1
            },
            AttentionScores {
                softcap: Some(f32::NAN),
                ..S1
            },
        ] {
            assert!(
                check_attention(8 * 64, heads(0, 4), None, &k, &v, SHAPE, bad, 4 * 64).is_err()
            );
        }
    }

    #[test]
    fn attention_calls_that_do_not_fit_are_refused() {
        let view = layout().positions_view(0, 10);
        let (k, v) = (operand(view), operand(view));
        let call = |q_len, q_layout, shape, out_len, v: &KvOperand<'_>| {
            check_attention(q_len, q_layout, None, &k, v, shape, S1, out_len)
        };
        assert!(call(8 * 64, heads(0, 4), SHAPE, 4 * 64, &v).is_ok());
        // Short q or out buffers.
        assert!(call(4 * 64 - 1, heads(0, 4), SHAPE, 4 * 64, &v).is_err());
        assert!(call(8 * 64, heads(0, 4), SHAPE, 4 * 64 - 1, &v).is_err());
        // Heads not a multiple of kv_heads, too large a head, a q layout of other heads.
        let odd = AttentionShape { heads: 3, ..SHAPE };
        assert!(call(8 * 64, heads(0, 3), odd, 4 * 64, &v).is_err());
        let big = AttentionShape {
            head_dim: MAX_HEAD_DIM + 8,
            ..SHAPE
        };
        assert!(call(1 << 20, heads(0, 4), big, 1 << 20, &v).is_err());
        assert!(call(8 * 64, heads(0, 2), SHAPE, 4 * 64, &v).is_err());
        // A view that covers too few positions, or a V laid out differently from K.
        let short = operand(layout().positions_view(0, 9));
        assert!(call(8 * 64, heads(0, 4), SHAPE, 4 * 64, &short).is_err());
        let mut shifted = view;
        shifted.offset_elems += 8;
        assert!(call(8 * 64, heads(0, 4), SHAPE, 4 * 64, &operand(shifted)).is_err());
        // A view past its buffer's end.
        let over = KvOperand::from_sized_mem(std::ptr::null_mut(), 100, view);
        assert!(call(8 * 64, heads(0, 4), SHAPE, 4 * 64, &over).is_err());
        // A fresh token in a two-token step.
        let two = AttentionShape { seq: 2, ..SHAPE };
        let fresh = FreshToken {
            k: heads(4 * 64, 2),
            v: heads(6 * 64, 2),
            rope: ROPE,
        };
        let q2 = HeadsLayout {
            seq: 2,
            ..heads(0, 4)
        };
        let two_view = operand(layout().positions_view(0, 11));
        assert!(check_attention(1 << 12, q2, None, &two_view, &two_view, two, S1, 8 * 64).is_ok());
        assert!(check_attention(
            1 << 12,
            q2,
            Some(fresh),
            &two_view,
            &two_view,
            two,
            S1,
            8 * 64
        )
        .is_err());
    }

    #[test]
    fn appends_become_parameters_or_nothing() {
        let dst = operand(layout().positions_view(9, 1));
        let p = check_kv_write(8 * 64, heads(4 * 64, 2), &dst, Some(ROPE), 9)
            .expect("a valid append")
            .expect("one position to write");
        assert_eq!(
            (p.src_off, p.dst_off, p.pos_stride, p.past),
            (256, 9 * 64, 64, 9)
        );
        assert_eq!((p.rotary_dim, p.style), (32, 1));
        let v = check_kv_write(8 * 64, heads(6 * 64, 2), &dst, None, 9)
            .expect("a valid append")
            .expect("one position to write");
        assert_eq!((v.rotary_dim, v.log2_theta), (0, 0.0));
        // Nothing to write, a source of other heads, a short source.
        let empty = operand(layout().positions_view(9, 0));
        let none = HeadsLayout {
            seq: 0,
            ..heads(0, 2)
        };
        assert_eq!(check_kv_write(0, none, &empty, None, 9).ok(), Some(None));
        assert!(check_kv_write(8 * 64, heads(0, 4), &dst, None, 9).is_err());
        assert!(check_kv_write(6 * 64 - 1, heads(4 * 64, 2), &dst, None, 9).is_err());

        let parts = QkvParts {
            qkv_len: 8 * 64,
            q: heads(0, 4),
            k: heads(4 * 64, 2),
            v: heads(6 * 64, 2),
            k_dst: &dst,
            v_dst: &dst,
        };
        let f = check_qkv_rope_write(&parts, ROPE, 9)
            .expect("a valid fused append")
            .expect("one token");
        assert_eq!((f.q_off, f.k_off, f.v_off, f.stride), (0, 256, 384, 512));
        assert_eq!((f.heads, f.kv_heads, f.past), (4, 2, 9));
        let short = QkvParts {
            qkv_len: 8 * 64 - 1,
            ..parts
        };
        assert!(check_qkv_rope_write(&short, ROPE, 9).is_err());
    }
}
