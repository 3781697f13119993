// Embedding gather: out[t][d] = table[ids[t]][d] * scale (scale = sqrt(dim) for Gemma, 1 otherwise), from an f16
// table or an M0E4 table (codes [rows][dim / 2] bytes, scales/offsets [rows][dim / group] f16). Token ids come
// from the device (e.g. the argmax of the previous step), so an id past the vocabulary is clamped to the last
// row rather than read out of bounds; the launcher checks host-side ids before they are uploaded.
//
// A table larger than the device's largest allocation is stored in parts of whole rows (rows first..first + rows
// of the vocabulary each): the gather runs once per part, and each launch writes only the tokens whose rows it
// holds, so every output is written by exactly one launch with the same arithmetic as an unsplit table.

// Global size (dim, seq).
kernel void embed_f16(global const half* table, global const uint* ids, global float* out, uint dim, uint vocab,
                      uint first, uint rows, float scale) {
    const uint d = get_global_id(0), t = get_global_id(1);
    const uint id = min(ids[t], vocab - 1);
    if (id < first || id - first >= rows) return;
    out[(size_t)t * dim + d] = vload_half((size_t)(id - first) * dim + d, table) * scale;
}

// Global size (dim, seq).
kernel void embed_m0e4(global const uchar* codes, global const half* scales, global const half* offsets,
                       global const uint* ids, global float* out, uint dim, uint vocab, uint first, uint rows,
                       uint group, float scale) {
    const uint d = get_global_id(0), t = get_global_id(1);
    const uint id = min(ids[t], vocab - 1);
    if (id < first || id - first >= rows) return;
    const uint row = id - first;
    const uchar byte = codes[(size_t)row * (dim / 2) + d / 2];
    const uint q = (d & 1) ? (byte >> 4) : (byte & 0xF);
    const float h = as_float((q << 19) | TL_M0E4_ONE);
    const size_t gi = (size_t)row * (dim / group) + d / group;
    out[(size_t)t * dim + d] = mad(vload_half(gi, scales), h, vload_half(gi, offsets)) * scale;
}
