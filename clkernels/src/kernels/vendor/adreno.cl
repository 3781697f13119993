// Qualcomm Adreno (TLITE_HAS_SUBGROUPS_QCOM): every kernel that reduces over sub-groups (the mat-vec, attention's
// attn_partial and attn_rows, the norms, the softmax) asks for half waves (64 lanes) through TL_REQD_SUBGROUP,
// qcom_reqd_sub_group_size("half") as Qualcomm's documentation and llama.cpp's Adreno kernels spell it, and where
// cl_khr_subgroups is missing the reduction interface (TL_SG_*) is a shuffle-down tree over
// qcom_sub_group_shuffle_down that assumes those 64 lanes. TL_REQD_SUBGROUP is empty (vendor/portable.cl) wherever
// the compiler does not define cl_qcom_reqd_sub_group_size: PoCL, NVIDIA, any other device. Written from
// Qualcomm's documentation; it has never run on an Adreno, only been compiled, on PoCL under TLITE_COMPILE_CHECK,
// whose stand-ins make sub-groups of one work-item whose shuffles return the default value, so the tree stays
// correct there.

#ifdef TLITE_HAS_SUBGROUPS_QCOM
#ifdef TLITE_COMPILE_CHECK

// PoCL's compiler does not know qcom_reqd_sub_group_size, so the stand-in puts a kernel attribute it does know
// (vec_type_hint, a hint without effect) in the same place: the check proves every use sits where a kernel
// attribute may.
#define TL_REQD_SUBGROUP __attribute__((vec_type_hint(float)))
#define qcom_sub_group_shuffle_down(v, d, w, def) (def)
#define CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM 0
#define TL_QCOM_SHUFFLE 1
#define TL_QCOM_SG_LID() 0u
#define TL_QCOM_SG_ID() ((uint)get_local_id(0))
#define TL_QCOM_NUM_SG() ((uint)get_local_size(0))

#else

#ifdef cl_qcom_reqd_sub_group_size
#pragma OPENCL EXTENSION cl_qcom_reqd_sub_group_size : enable
// The reductions assume at most 64 lanes.
#define TL_REQD_SUBGROUP __attribute__((qcom_reqd_sub_group_size("half")))
#endif
#ifdef cl_qcom_subgroup_shuffle
#pragma OPENCL EXTENSION cl_qcom_subgroup_shuffle : enable
#define TL_QCOM_SHUFFLE 1
#endif
#define TL_QCOM_SG_LID() get_sub_group_local_id()
#define TL_QCOM_SG_ID() get_sub_group_id()
#define TL_QCOM_NUM_SG() get_num_sub_groups()

#endif

#if defined(TL_QCOM_SHUFFLE) && !defined(TL_SG_SUM)
// A shuffle-down tree over a half wave (64 lanes); lane 0 holds the sum.
inline float tl_qcom_reduce_add(float v) {
    v += qcom_sub_group_shuffle_down(v, 32u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 16u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 8u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 4u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 2u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 1u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    return v;
}

// The same tree for the maximum (lanes past the wave read -inf).
inline float tl_qcom_reduce_max(float v) {
    for (uint o = 32u; o > 0u; o >>= 1)
        v = fmax(v, qcom_sub_group_shuffle_down(v, o, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, -INFINITY));
    return v;
}

#define TL_SG_SUM(x) tl_qcom_reduce_add(x)
#define TL_SG_MAX(x) tl_qcom_reduce_max(x)
#define TL_SG_LID() TL_QCOM_SG_LID()
#define TL_SG_ID() TL_QCOM_SG_ID()
#define TL_NUM_SG() TL_QCOM_NUM_SG()
#endif
#endif

// Weights through the texture path (TL_WEIGHTS_IMAGE, defined by the mat-vec's Adreno image build, which
// matvec/choose.rs picks on Adreno devices with images): the weights arrive as image1d_buffer_t over their own
// buffers and are read with read_imageui, through the texture units and their cache instead of the load/store path,
// as llama.cpp's Adreno kernels read their weights. M0E4 codes and f16 weights are uint4 pixels (32 codes, 8
// halves); scales and offsets are the 16 bits of one half per pixel, read with vload_half (not CL_HALF_FLOAT,
// which PoCL reads wrongly, see runtime/image.rs). Plain OpenCL 1.2 images, so the build runs on any device with
// image support (PoCL's CPU device in the tests); only the choice is Adreno's. The launchers fall back to the buffer
// build for a tensor over CL_DEVICE_IMAGE_MAX_BUFFER_SIZE pixels.
#ifdef TL_WEIGHTS_IMAGE
#define TL_CODES read_only image1d_buffer_t
#define TL_HALVES read_only image1d_buffer_t
inline uint4 tl_code_chunk(TL_CODES codes, size_t i) {
    return read_imageui(codes, (int)i);
}

// Half i of the image (its 16 bits in the pixel's first channel) as f32.
inline float tl_weight_half(TL_HALVES h, size_t i) {
    const ushort bits = (ushort)read_imageui(h, (int)i).x;
    return vload_half(0, (const private half*)&bits);
}

// f16 weights as uint4 pixels of 8 halves each.
#define TL_F16_WEIGHTS read_only image1d_buffer_t
inline float8 tl_half8_chunk(TL_F16_WEIGHTS w, size_t i) {
    const uint4 bits = read_imageui(w, (int)i);
    return vload_half8(0, (const private half*)&bits);
}
#endif
