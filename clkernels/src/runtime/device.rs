//! Finding devices: every platform's devices in one numbered list, and the selector (`--device`) that picks one.

use opencl3::device::{Device, CL_DEVICE_TYPE_ALL};
use opencl3::platform::get_platforms;
use opencl3::types::cl_device_id;

use crate::runtime::{loader, Capabilities, ClError, DeviceKind};

/// Which device to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// The first GPU, else the first device.
    #[default]
    Default,
    /// The device with this index in [`list_devices`]'s order.
    Index(usize),
    /// The first device whose name (or platform name) contains this text, case-insensitively.
    Name(String),
}

impl DeviceSelector {
    /// Parses `--device` text: a number is an index, anything else a name substring; empty means the default.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.is_empty() {
            DeviceSelector::Default
        } else if let Ok(index) = text.parse() {
            DeviceSelector::Index(index)
        } else {
            DeviceSelector::Name(text.to_string())
        }
    }

    /// The selector from the `TLITE_DEVICE` environment variable, else the default.
    pub fn from_env() -> Self {
        std::env::var("TLITE_DEVICE")
            .map(|v| Self::parse(&v))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelector::Default => write!(f, "default (first GPU, else first device)"),
            DeviceSelector::Index(i) => write!(f, "index {i}"),
            DeviceSelector::Name(n) => write!(f, "name containing \"{n}\""),
        }
    }
}

/// One device of one platform, with its capabilities.
#[derive(Debug, Clone)]
pub struct DeviceEntry {
    /// Position in the list over all platforms (what `--device N` names).
    pub index: usize,
    /// Position of its platform.
    pub platform_index: usize,
    /// The raw device id.
    pub id: cl_device_id,
    /// What the device can do.
    pub caps: Capabilities,
}

// SAFETY: a cl_device_id is an opaque handle the OpenCL runtime allows from any thread.
unsafe impl Send for DeviceEntry {}
// SAFETY: as above; the entry holds no interior mutability.
unsafe impl Sync for DeviceEntry {}

impl DeviceEntry {
    /// The device as an `opencl3` object.
    pub fn device(&self) -> Device {
        Device::new(self.id)
    }
}

/// Lists every device of every platform, numbered in order. Fails clearly when no OpenCL library or platform exists.
pub fn list_devices() -> Result<Vec<DeviceEntry>, ClError> {
    loader::ensure_loaded()?;
    // The ocl-icd loader initialises itself on the first clGetPlatformIDs without a lock: concurrent first calls
    // (parallel tests, several Gpus opened at once) can see no platform or crash. Discovery is serialised.
    static DISCOVERY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = DISCOVERY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let platforms = match get_platforms() {
        Ok(p) => p,
        // The ICD loader reports "no platform" as CL_PLATFORM_NOT_FOUND_KHR (-1001).
        Err(e) if e.0 == -1001 => return Err(ClError::NoPlatform),
        Err(e) => return Err(ClError::from_code("clGetPlatformIDs", e.0)),
    };
    if platforms.is_empty() {
        return Err(ClError::NoPlatform);
    }
    // A broken ICD (a driver installed without its hardware, say) must not hide the working ones: its errors are
    // logged and it is skipped; they are returned only when no device at all is usable.
    let mut entries = Vec::new();
    let mut first_error = None;
    for (platform_index, platform) in platforms.iter().enumerate() {
        let ids = match platform.get_devices(CL_DEVICE_TYPE_ALL) {
            Ok(ids) => ids,
            Err(e) if e.0 == opencl3::error_codes::CL_DEVICE_NOT_FOUND => Vec::new(),
            Err(e) => {
                let err = ClError::from_code("clGetDeviceIDs", e.0);
                tracing::warn!(platform = platform_index, error = %err, "skipping an OpenCL platform");
                first_error.get_or_insert(err);
                Vec::new()
            }
        };
        for id in ids {
            match Capabilities::query(&Device::new(id)) {
                Ok(caps) => entries.push(DeviceEntry {
                    index: entries.len(),
                    platform_index,
                    id,
                    caps,
                }),
                Err(err) => {
                    tracing::warn!(platform = platform_index, error = %err, "skipping an OpenCL device");
                    first_error.get_or_insert(err);
                }
            }
        }
    }
    if entries.is_empty() {
        return Err(first_error.unwrap_or(ClError::NoPlatform));
    }
    Ok(entries)
}

/// Picks the entry the selector names.
pub fn select(entries: &[DeviceEntry], selector: &DeviceSelector) -> Result<DeviceEntry, ClError> {
    let found = match selector {
        DeviceSelector::Default => entries
            .iter()
            .find(|e| e.caps.kind == DeviceKind::Gpu)
            .or_else(|| entries.first()),
        DeviceSelector::Index(i) => entries.get(*i),
        DeviceSelector::Name(name) => {
            let needle = name.to_lowercase();
            entries
                .iter()
                .find(|e| e.caps.name.to_lowercase().contains(&needle))
                .or_else(|| {
                    entries
                        .iter()
                        .find(|e| e.caps.platform_name.to_lowercase().contains(&needle))
                })
        }
    };
    found.cloned().ok_or_else(|| ClError::NoMatchingDevice {
        selector: selector.to_string(),
        available: entries
            .iter()
            .map(|e| format!("[{}] {}", e.index, e.caps.name))
            .collect::<Vec<_>>()
            .join(", "),
    })
}
