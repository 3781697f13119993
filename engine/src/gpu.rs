//! The OpenCL forward pass: plans memory with symshape, keeps the KV cache in place, enqueues kernels.
