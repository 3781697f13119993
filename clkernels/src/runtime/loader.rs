//! Loading `libOpenCL` at run time (opencl3's `dynamic` feature), so a machine without OpenCL gets a clear message
//! instead of a linker error at start or a panic.

use crate::runtime::ClError;

/// What to do when the library is missing, for this target.
const HINT: &str = if cfg!(target_os = "android") {
    "On Android the vendor OpenCL library lives in /vendor/lib64 (libOpenCL.so): run with \
     LD_LIBRARY_PATH=/vendor/lib64 (scripts/adb-run does this) or OPENCL_DYLIB_PATH=/vendor/lib64/libOpenCL.so; an app \
     must declare <uses-native-library android:name=\"libOpenCL.so\" android:required=\"false\"/> in its manifest."
} else {
    "Install an OpenCL ICD loader and a driver: on Debian/Ubuntu `sudo apt-get install ocl-icd-libopencl1 \
     pocl-opencl-icd clinfo` (CPU) or your GPU vendor's OpenCL package; OPENCL_DYLIB_PATH may name the library file."
};

/// Android ships `libOpenCL.so` (no `.so.1`) in the vendor partition; tell cl3 where to look unless the user did.
#[cfg(target_os = "android")]
fn point_at_vendor_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("OPENCL_DYLIB_PATH").is_none() {
            std::env::set_var(
                "OPENCL_DYLIB_PATH",
                "libOpenCL.so;/vendor/lib64/libOpenCL.so;/system/vendor/lib64/libOpenCL.so;/vendor/lib64/egl/libGLES_mali.so",
            );
        }
    });
}

/// Loads the OpenCL library (once per process) or explains why it cannot.
pub fn ensure_loaded() -> Result<(), ClError> {
    #[cfg(target_os = "android")]
    point_at_vendor_library();
    match cl3::load_library() {
        Ok(_) => Ok(()),
        Err(err) => Err(ClError::LibraryMissing {
            reason: err.to_string(),
            hint: HINT,
        }),
    }
}

/// The error for a call that found no library (cl3 reports only a code then).
pub(crate) fn load_failure() -> ClError {
    let reason = match cl3::load_library() {
        Ok(_) => "the library loaded, but a later load reported failure".to_string(),
        Err(err) => err.to_string(),
    };
    ClError::LibraryMissing { reason, hint: HINT }
}
