// Embedding gather: out[t][d] = table[ids[t]][d] * scale (scale = sqrt(dim) for Gemma, 1 otherwise), from an f16
// table or an M0E4 table (codes [vocab][dim / 2] bytes, scales/offsets [vocab][dim / group] f16). Token ids come
// from the device (e.g. the argmax of the previous step), so an id past the vocabulary is clamped to the last
// row rather than read out of bounds; the launcher checks host-side ids before they are uploaded.

// Global size (dim, seq).
kernel void embed_f16(global const half* table, global const uint* ids, global float* out, uint dim, uint vocab,
                      float scale) {
    const uint d = get_global_id(0), t = get_global_id(1);
    const uint id = min(ids[t], vocab - 1);
    out[(size_t)t * dim + d] = vload_half((size_t)id * dim + d, table) * scale;
}

// Global size (dim, seq).
kernel void embed_m0e4(global const uchar* codes, global const half* scales, global const half* offsets,
                       global const uint* ids, global float* out, uint dim, uint vocab, uint group, float scale) {
    const uint d = get_global_id(0), t = get_global_id(1);
    const uint id = min(ids[t], vocab - 1);
    const uchar byte = codes[(size_t)id * (dim / 2) + d / 2];
    const uint q = (d & 1) ? (byte >> 4) : (byte & 0xF);
    const float h = as_float((q << 19) | TL_M0E4_ONE);
    const size_t gi = (size_t)id * (dim / group) + d / group;
    out[(size_t)t * dim + d] = mad(vload_half(gi, scales), h, vload_half(gi, offsets)) * scale;
}
