// Sub-groups through the cl_khr_subgroups or cl_intel_subgroups built-ins (TLITE_HAS_SUBGROUPS): the reduction
// interface (TL_SG_*) of Mali, Intel and any other device that has them. tlite has no Mali-specific code beyond
// this; Adreno's extras are in adreno.cl. Under TLITE_COMPILE_CHECK the built-ins become stand-ins over
// sub-groups of one work-item, so PoCL compiles and runs the kernels' use of them.

#if defined(TLITE_HAS_SUBGROUPS) && !defined(TL_SG_SUM)
#ifdef TLITE_COMPILE_CHECK

#define TL_SG_SUM(x) (x)
#define TL_SG_MAX(x) (x)
#define TL_SG_LID() 0u
#define TL_SG_ID() ((uint)get_local_id(0))
#define TL_NUM_SG() ((uint)get_local_size(0))

#else

#ifdef TLITE_HAS_SUBGROUPS_KHR
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#endif
#ifdef TLITE_HAS_SUBGROUPS_INTEL
#pragma OPENCL EXTENSION cl_intel_subgroups : enable
#endif
#define TL_SG_SUM(x) sub_group_reduce_add(x)
#define TL_SG_MAX(x) sub_group_reduce_max(x)
#define TL_SG_LID() get_sub_group_local_id()
#define TL_SG_ID() get_sub_group_id()
#define TL_NUM_SG() get_num_sub_groups()

#endif
#endif
