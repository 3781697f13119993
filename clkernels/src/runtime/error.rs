//! One error type for everything OpenCL, carrying the error name, the call that failed and, for build failures, the
//! program name and the compiler's log.

use opencl3::error_codes::{error_text, DLOPEN_FUNCTION_NOT_AVAILABLE, DLOPEN_RUNTIME_LOAD_FAILED};

/// An OpenCL failure, named so that a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum ClError {
    /// `libOpenCL` could not be loaded at run time.
    #[error("the OpenCL library could not be loaded ({reason}).\n{hint}")]
    LibraryMissing {
        /// What the dynamic loader said.
        reason: String,
        /// What to install or set so that it loads.
        hint: &'static str,
    },
    /// The loaded OpenCL library lacks an entry point (an OpenCL 1.x ICD asked for a 2.0+ call).
    #[error("{call}: the loaded OpenCL library does not export this function")]
    FunctionMissing {
        /// The OpenCL call.
        call: &'static str,
    },
    /// An OpenCL call returned an error code.
    #[error("{call} failed with {name} ({code})")]
    Call {
        /// The OpenCL call, e.g. `clEnqueueNDRangeKernel`.
        call: &'static str,
        /// The numeric error code.
        code: i32,
        /// The error's name, e.g. `CL_INVALID_WORK_GROUP_SIZE`.
        name: &'static str,
    },
    /// Building a program from source failed; the log says why.
    #[error("building OpenCL program `{program}` failed with {name} (options: `{options}`); build log:\n{log}")]
    Build {
        /// The program's name (see [`crate::runtime::ProgramSource`]).
        program: String,
        /// The error's name, usually `CL_BUILD_PROGRAM_FAILURE`.
        name: &'static str,
        /// The build options passed to the compiler.
        options: String,
        /// The compiler's build log.
        log: String,
    },
    /// No OpenCL platform is installed.
    #[error(
        "no OpenCL platform found: install a driver (on Debian/Ubuntu: `apt-get install ocl-icd-libopencl1 \
         pocl-opencl-icd` for the CPU, or your GPU vendor's OpenCL package); `clinfo -l` lists what is installed"
    )]
    NoPlatform,
    /// No device matches the selector.
    #[error("no OpenCL device matches `{selector}`; available devices: {available}")]
    NoMatchingDevice {
        /// The selector as given.
        selector: String,
        /// The devices that exist, with their indices.
        available: String,
    },
    /// A define or option passed to a program build is not a valid identifier/value.
    #[error("invalid program build define `{define}`: {reason}")]
    InvalidDefine {
        /// The offending define.
        define: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host slice does not match a device buffer's length.
    #[error("{call}: host slice has {got} elements but the device buffer has {expected}")]
    LengthMismatch {
        /// The operation.
        call: &'static str,
        /// The buffer's length in elements.
        expected: usize,
        /// The host slice's length in elements.
        got: usize,
    },
    /// A buffer of zero elements or too many bytes was requested.
    #[error("invalid buffer size: {elements} elements of {element_bytes} bytes ({reason})")]
    InvalidBufferSize {
        /// Requested element count.
        elements: usize,
        /// Size of one element in bytes.
        element_bytes: usize,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A sub-buffer that does not lie inside its parent or whose origin misses the device's base-address alignment.
    #[error(
        "sub-buffer of {bytes} bytes at byte {origin} of a {parent_bytes}-byte buffer: {reason}"
    )]
    InvalidSubBuffer {
        /// Origin in bytes.
        origin: u64,
        /// Size in bytes.
        bytes: u64,
        /// The parent's size in bytes.
        parent_bytes: u64,
        /// What is wrong.
        reason: String,
    },
    /// A buffer larger than the device (or its profile) allows in one allocation.
    #[error(
        "a buffer of {bytes} bytes exceeds the largest single allocation of {device}, {max} bytes \
         (CL_DEVICE_MAX_MEM_ALLOC_SIZE)"
    )]
    AllocationTooLarge {
        /// The buffer's size.
        bytes: u64,
        /// The device's largest allocation.
        max: u64,
        /// The device, with its profile ([`crate::runtime::Capabilities::display_name`]).
        device: String,
    },
    /// A kernel needs more of a per-launch resource than the device (or its profile) gives.
    #[error("kernel `{kernel}` needs {needs} {what} but {device} allows at most {limit}")]
    OverDeviceLimit {
        /// The kernel.
        kernel: String,
        /// The resource, e.g. `bytes of local memory`, `work-items per group`.
        what: &'static str,
        /// What the kernel needs.
        needs: u64,
        /// What the device allows.
        limit: u64,
        /// The device, with its profile.
        device: String,
    },
    /// The device profile asked for could not be read.
    #[error(transparent)]
    Profile(#[from] crate::runtime::ProfileError),
}

impl ClError {
    /// Converts a raw OpenCL status from `call` into a [`ClError`], recognising the dynamic-loading failures.
    pub fn from_code(call: &'static str, code: i32) -> Self {
        match code {
            DLOPEN_RUNTIME_LOAD_FAILED => crate::runtime::loader::load_failure(),
            DLOPEN_FUNCTION_NOT_AVAILABLE => ClError::FunctionMissing { call },
            _ => ClError::Call {
                call,
                code,
                name: error_text(code),
            },
        }
    }

    /// The numeric OpenCL error code, where there is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            ClError::Call { code, .. } => Some(*code),
            ClError::Build { .. } => Some(opencl3::error_codes::CL_BUILD_PROGRAM_FAILURE),
            _ => None,
        }
    }
}

/// Attaches the OpenCL call's name to a raw `opencl3`/`cl3` result: `queue.finish().cl_call("clFinish")?`.
pub trait ClResultExt<T> {
    /// Maps the error into a [`ClError`] naming `call`.
    fn cl_call(self, call: &'static str) -> Result<T, ClError>;
}

impl<T> ClResultExt<T> for Result<T, opencl3::error_codes::ClError> {
    fn cl_call(self, call: &'static str) -> Result<T, ClError> {
        self.map_err(|e| ClError::from_code(call, e.0))
    }
}

impl<T> ClResultExt<T> for Result<T, i32> {
    fn cl_call(self, call: &'static str) -> Result<T, ClError> {
        self.map_err(|code| ClError::from_code(call, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_carry_the_opencl_name() {
        let err = ClError::from_code(
            "clEnqueueNDRangeKernel",
            opencl3::error_codes::CL_INVALID_WORK_GROUP_SIZE,
        );
        let text = err.to_string();
        assert!(text.contains("CL_INVALID_WORK_GROUP_SIZE"), "{text}");
        assert!(text.contains("clEnqueueNDRangeKernel"), "{text}");
        assert_eq!(err.code(), Some(-54));
    }

    #[test]
    fn a_missing_library_becomes_an_actionable_message() {
        let err = ClError::from_code("clGetPlatformIDs", DLOPEN_RUNTIME_LOAD_FAILED);
        assert!(matches!(err, ClError::LibraryMissing { .. }), "{err:?}");
        let text = err.to_string();
        if cfg!(target_os = "android") {
            assert!(text.contains("/vendor/lib64"), "{text}");
        } else {
            assert!(text.contains("apt-get install"), "{text}");
        }
        let missing = ClError::from_code(
            "clCreateCommandQueueWithProperties",
            DLOPEN_FUNCTION_NOT_AVAILABLE,
        );
        assert!(
            matches!(missing, ClError::FunctionMissing { .. }),
            "{missing:?}"
        );
    }
}
