//! OpenCL runtime: devices, capabilities, programs, queues, buffers and errors.
