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
    if let Some(value) = std::env::var_os("OPENCL_DYLIB_PATH") {
        check_dylib_path(&value.to_string_lossy())?;
    }
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

/// cl3 tries each `;`-separated entry of `OPENCL_DYLIB_PATH` and, when none loads, silently falls back to the
/// system's `libOpenCL`: a user who named a library would then run on another driver without knowing. When every
/// entry is a path (not a bare name the loader searches for) and none of them exists, that is an error naming them.
fn check_dylib_path(value: &str) -> Result<(), ClError> {
    let entries: Vec<&str> = value.split(';').filter(|e| !e.trim().is_empty()).collect();
    let is_path = |e: &&str| e.contains('/') || e.contains(std::path::MAIN_SEPARATOR);
    if entries.is_empty()
        || !entries.iter().all(is_path)
        || entries.iter().any(|e| std::path::Path::new(e).exists())
    {
        return Ok(());
    }
    Err(ClError::LibraryMissing {
        reason: format!(
            "OPENCL_DYLIB_PATH names {}, which does not exist",
            entries.join(", ")
        ),
        hint: "Point OPENCL_DYLIB_PATH at an existing OpenCL library (e.g. /usr/lib/x86_64-linux-gnu/libOpenCL.so.1), \
               or unset it to use the system's libOpenCL.",
    })
}

#[cfg(test)]
mod tests {
    use super::check_dylib_path;

    #[test]
    fn a_dylib_path_naming_only_missing_files_is_an_error() {
        let dir = std::env::temp_dir().join("tlite-no-such-dir-for-opencl");
        let missing = dir.join("libOpenCL.so.1").display().to_string();
        let err = match check_dylib_path(&missing) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("a missing OPENCL_DYLIB_PATH was accepted"),
        };
        assert!(
            err.contains(&missing) && err.contains("does not exist"),
            "{err}"
        );
        let two = format!("{missing};{}", dir.join("other.so").display());
        assert!(check_dylib_path(&two).is_err());
        // One existing entry, a bare library name the loader searches for, or nothing at all: left to the loader.
        let exists = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        assert!(check_dylib_path(&format!("{missing};{exists}")).is_ok());
        assert!(check_dylib_path(&format!("{missing};libOpenCL.so")).is_ok());
        assert!(check_dylib_path("").is_ok());
    }
}
