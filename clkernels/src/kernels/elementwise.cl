// Small elementwise kernels the decoder needs between the big ones. Global size n (or (cols, rows)).

// out = a + b. out may alias a or b.
kernel void add(global const float* a, global const float* b, global float* out) {
    const size_t i = get_global_id(0);
    out[i] = a[i] + b[i];
}

// out = act(gate) * up with act 0 = SiLU (SwiGLU), 1 = tanh-GELU (Gemma's GeGLU). out may alias gate or up.
kernel void gated_act(global const float* gate, global const float* up, global float* out, uint act) {
    const size_t i = get_global_id(0);
    out[i] = tl_gate_act(gate[i], act) * up[i];
}

// y[row][c] += bias[c] for y shaped [rows][cols] (Qwen2's QKV bias). Global size (cols, rows).
kernel void add_bias_rows(global float* y, global const float* bias, uint cols) {
    const uint c = get_global_id(0), r = get_global_id(1);
    y[(size_t)r * cols + c] += bias[c];
}

// dst[dst_offset + i] = src[src_offset + i]: whole rows of one row-major buffer into another (the last prompt
// position before the output head). Global size rows * cols.
kernel void copy_rows(global const float* src, uint src_offset, global float* dst, uint dst_offset) {
    const size_t i = get_global_id(0);
    dst[(size_t)dst_offset + i] = src[(size_t)src_offset + i];
}

// x = cap * tanh(x / cap): Gemma 2's final-logit soft-capping. Global size n.
kernel void softcap(global float* x, float cap) {
    const size_t i = get_global_id(0);
    x[i] = cap * tanh(x[i] / cap);
}
