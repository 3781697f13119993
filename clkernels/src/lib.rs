//! OpenCL runtime layer and hand-written kernels for LLM inference on mobile GPUs.
