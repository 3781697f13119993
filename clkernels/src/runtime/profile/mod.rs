//! Device profiles: the limits and extensions of real phone GPUs, so that a desktop device can be made to behave
//! like one (`TLITE_DEVICE_PROFILE=adreno-750`, `--device-profile`).
//!
//! No phone is reachable from the development machines, yet what breaks on phones is mostly what a desktop driver
//! allows and a phone's does not: a buffer over `CL_DEVICE_MAX_MEM_ALLOC_SIZE`, a kernel with more than 32 KiB of
//! local memory, a work-group larger than the device runs, an extension assumed but absent, a model that does not
//! fit the phone's memory. A profile lowers the opened device's limits to the phone's and removes the extensions the
//! phone does not show, before anything else reads them, so every decision tlite takes (kernel variants, buffer
//! sizes, KV capacity, context) is the one it would take there, and every breach is an error here.
//!
//! The profiles are copied from public `clinfo` dumps (`clkernels/profiles/`, whose README says what `null`
//! means and where each value comes from) and embedded in the crate. How a profile combines with the host device
//! is in [`DeviceProfile::apply`].

mod apply;
mod parse;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The environment variable that names a profile (a bundled name or a JSON path; empty or `none`: no profile).
pub const PROFILE_ENV: &str = "TLITE_DEVICE_PROFILE";

/// The profiles embedded in the crate, by name: the phones of `clkernels/profiles/` and `phone-min`.
const BUNDLED: [(&str, &str); 6] = [
    (
        "adreno-740",
        include_str!("../../../profiles/adreno-740.json"),
    ),
    (
        "adreno-750",
        include_str!("../../../profiles/adreno-750.json"),
    ),
    (
        "adreno-830",
        include_str!("../../../profiles/adreno-830.json"),
    ),
    (
        "mali-g610-mc6",
        include_str!("../../../profiles/mali-g610-mc6.json"),
    ),
    (
        "mali-g710",
        include_str!("../../../profiles/mali-g710.json"),
    ),
    (
        "phone-min",
        include_str!("../../../profiles/phone-min.json"),
    ),
];

/// The profile whose values stand in for limits another profile's source does not show.
pub const PHONE_MIN: &str = "phone-min";

/// The limits a profile states; `None` where its source does not show the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProfileLimits {
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` in bytes.
    pub max_alloc_bytes: Option<u64>,
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` in bytes.
    pub global_mem_bytes: Option<u64>,
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    pub local_mem_bytes: Option<u64>,
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    pub max_work_group_size: Option<usize>,
    /// `CL_DEVICE_MAX_WORK_ITEM_SIZES`, one per dimension.
    pub max_work_item_sizes: Option<Vec<usize>>,
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bits.
    pub base_addr_align_bits: Option<u32>,
}

/// Names of the [`ProfileLimits`] fields as the JSON files spell them, for messages and for saying which values
/// were taken from `phone-min`.
pub const LIMIT_FIELDS: [&str; 6] = [
    "max_mem_alloc_size",
    "global_mem_size",
    "local_mem_size",
    "max_work_group_size",
    "max_work_item_sizes",
    "mem_base_addr_align_bits",
];

impl ProfileLimits {
    /// These limits with every unknown one taken from `floor`, and the JSON names of those taken.
    pub fn or_floor(&self, floor: &ProfileLimits) -> (ProfileLimits, Vec<&'static str>) {
        let mut taken = Vec::new();
        let mut pick = |mine: bool, field: &'static str| {
            if !mine {
                taken.push(field);
            }
        };
        pick(self.max_alloc_bytes.is_some(), LIMIT_FIELDS[0]);
        pick(self.global_mem_bytes.is_some(), LIMIT_FIELDS[1]);
        pick(self.local_mem_bytes.is_some(), LIMIT_FIELDS[2]);
        pick(self.max_work_group_size.is_some(), LIMIT_FIELDS[3]);
        pick(self.max_work_item_sizes.is_some(), LIMIT_FIELDS[4]);
        pick(self.base_addr_align_bits.is_some(), LIMIT_FIELDS[5]);
        let limits = ProfileLimits {
            max_alloc_bytes: self.max_alloc_bytes.or(floor.max_alloc_bytes),
            global_mem_bytes: self.global_mem_bytes.or(floor.global_mem_bytes),
            local_mem_bytes: self.local_mem_bytes.or(floor.local_mem_bytes),
            max_work_group_size: self.max_work_group_size.or(floor.max_work_group_size),
            max_work_item_sizes: self
                .max_work_item_sizes
                .clone()
                .or_else(|| floor.max_work_item_sizes.clone()),
            base_addr_align_bits: self.base_addr_align_bits.or(floor.base_addr_align_bits),
        };
        (limits, taken)
    }
}

/// One phone GPU's limits and extensions, as its source shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceProfile {
    /// Short name (`adreno-750`), the file's `short_name`.
    pub name: String,
    /// Where the values come from (a URL and a note), if the file says.
    pub source: Option<String>,
    /// Vendor as the file names it (`Qualcomm`, `Arm`).
    pub vendor: Option<String>,
    /// `CL_PLATFORM_NAME`, if shown.
    pub platform_name: Option<String>,
    /// `CL_DEVICE_NAME`, if shown.
    pub device_name: Option<String>,
    /// `CL_DEVICE_VERSION`, if shown.
    pub device_version: Option<String>,
    /// `CL_DRIVER_VERSION`, if shown.
    pub driver_version: Option<String>,
    /// `CL_DEVICE_OPENCL_C_VERSION`, if shown.
    pub opencl_c_version: Option<String>,
    /// Compute units, if shown (not a limit: only for showing what tlite would choose on the phone).
    pub compute_units: Option<u32>,
    /// Clock in MHz, if shown (likewise).
    pub max_clock_mhz: Option<u32>,
    /// The limits the source shows.
    pub limits: ProfileLimits,
    /// Every extension the source shows as present, sorted. Anything else counts as absent (README).
    pub extensions: Vec<String>,
    /// Whether the source's extension list was complete (`false`: an extension not listed was merely not seen).
    pub extensions_complete: bool,
    /// `CL_DEVICE_IMAGE_SUPPORT`, if shown.
    pub image_support: Option<bool>,
    /// `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE` in pixels, if shown.
    pub image_max_buffer_pixels: Option<u64>,
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT`, if shown.
    pub preferred_vector_width_float: Option<u32>,
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_HALF`, if shown.
    pub preferred_vector_width_half: Option<u32>,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT`, if shown.
    pub native_vector_width_float: Option<u32>,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_HALF`, if shown.
    pub native_vector_width_half: Option<u32>,
}

/// The fewest pixels an `image1d_buffer_t` may have on a full-profile device with images (the OpenCL
/// specification's minimum of `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`): what a profile that does not show the limit is
/// taken to allow.
pub const SPEC_MIN_IMAGE_BUFFER_PIXELS: u64 = 65536;

/// Why a profile could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Neither a bundled name nor a file.
    #[error(
        "unknown device profile `{name}`: it is no bundled profile and no file of that name exists; bundled \
         profiles: {known} (or give the path of a JSON file in their format, see clkernels/profiles/README.md)"
    )]
    Unknown {
        /// What was asked for.
        name: String,
        /// The bundled names, comma-separated.
        known: String,
    },
    /// The file could not be read.
    #[error("cannot read device profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not JSON, or a field has the wrong type.
    #[error("device profile {origin} is not valid profile JSON: {source}")]
    Json {
        /// The file or bundled name.
        origin: String,
        /// The parser's message, with line and column.
        source: serde_json::Error,
    },
    /// A field has a value no device can have.
    #[error("device profile {origin}: `{field}` {reason}")]
    Invalid {
        /// The file or bundled name.
        origin: String,
        /// The JSON field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DeviceProfile {
    /// The names of the bundled profiles.
    pub fn bundled_names() -> Vec<&'static str> {
        BUNDLED.iter().map(|(name, _)| *name).collect()
    }

    /// Every bundled profile, parsed.
    pub fn bundled() -> Result<Vec<DeviceProfile>, ProfileError> {
        BUNDLED
            .iter()
            .map(|(name, text)| parse::parse(text, name))
            .collect()
    }

    /// The bundled profile of this name (case-insensitive).
    pub fn named(name: &str) -> Result<DeviceProfile, ProfileError> {
        let wanted = name.trim().to_ascii_lowercase();
        match BUNDLED.iter().find(|(n, _)| *n == wanted) {
            Some((n, text)) => parse::parse(text, n),
            None => Err(unknown(name)),
        }
    }

    /// `phone-min`: the most restrictive value known for each limit.
    pub fn phone_min() -> Result<DeviceProfile, ProfileError> {
        Self::named(PHONE_MIN)
    }

    /// A profile from a JSON file in the bundled files' format.
    pub fn from_file(path: &Path) -> Result<DeviceProfile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse::parse(&text, &path.display().to_string())
    }

    /// A profile from JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<DeviceProfile, ProfileError> {
        parse::parse(text, origin)
    }

    /// What `--device-profile` and `TLITE_DEVICE_PROFILE` accept: a bundled name, else the path of a JSON file.
    pub fn resolve(text: &str) -> Result<DeviceProfile, ProfileError> {
        let text = text.trim();
        match Self::named(text) {
            Ok(profile) => Ok(profile),
            Err(ProfileError::Unknown { .. }) if Path::new(text).is_file() => {
                Self::from_file(Path::new(text))
            }
            Err(e) => Err(e),
        }
    }

    /// The limits in effect on the phone: the profile's own, with those its source does not show taken from
    /// `phone-min`; and the JSON names of the ones taken. Work-item sizes the source does not show are the
    /// work-group maximum in each dimension instead, as devices report them: a phone known to run 1024-wide groups
    /// is not limited to 256 items along their one dimension.
    pub fn limits_in_effect(&self) -> Result<(ProfileLimits, Vec<&'static str>), ProfileError> {
        if self.name == PHONE_MIN {
            return Ok((self.limits.clone(), Vec::new()));
        }
        let (mut limits, taken) = self.limits.or_floor(&Self::phone_min()?.limits);
        if self.limits.max_work_item_sizes.is_none() {
            limits.max_work_item_sizes = limits.max_work_group_size.map(|wg| vec![wg; 3]);
        }
        Ok((limits, taken))
    }

    /// Whether the phone has images, and how many pixels an `image1d_buffer_t` may have there. A source that does
    /// not show image support but lists an image extension (`cl_khr_image2d_from_buffer`, which needs images) is
    /// taken to have them; a limit it does not show is the specification's minimum.
    pub fn images_in_effect(&self) -> (bool, u64) {
        let implied = self
            .extensions
            .iter()
            .any(|e| e == "cl_khr_image2d_from_buffer" || e == "cl_ext_image_from_buffer");
        let support = self.image_support.unwrap_or(implied);
        let pixels = if support {
            self.image_max_buffer_pixels
                .unwrap_or(SPEC_MIN_IMAGE_BUFFER_PIXELS)
        } else {
            0
        };
        (support, pixels)
    }

    /// Whether the profile shows this extension as present.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions
            .binary_search_by(|e| e.as_str().cmp(name))
            .is_ok()
    }
}

fn unknown(name: &str) -> ProfileError {
    ProfileError::Unknown {
        name: name.to_string(),
        known: DeviceProfile::bundled_names().join(", "),
    }
}

/// Which profile, if any, a device is opened with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProfileChoice {
    /// The profile `TLITE_DEVICE_PROFILE` names; none when it is unset, empty or `none`.
    #[default]
    FromEnv,
    /// The device as it is, whatever the environment says.
    Off,
    /// This profile.
    Use(Box<DeviceProfile>),
}

impl ProfileChoice {
    /// Parses `--device-profile` text: `none` (or empty) for no profile, else a bundled name or a JSON path.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("none") {
            Ok(ProfileChoice::Off)
        } else {
            DeviceProfile::resolve(text).map(|p| ProfileChoice::Use(Box::new(p)))
        }
    }

    /// The profile this choice stands for (reading the environment for [`ProfileChoice::FromEnv`]).
    pub fn resolve(&self) -> Result<Option<DeviceProfile>, ProfileError> {
        match self {
            ProfileChoice::Off => Ok(None),
            ProfileChoice::Use(p) => Ok(Some((**p).clone())),
            ProfileChoice::FromEnv => match std::env::var(PROFILE_ENV) {
                Ok(text) => match Self::parse(&text)? {
                    ProfileChoice::Use(p) => Ok(Some(*p)),
                    _ => Ok(None),
                },
                Err(_) => Ok(None),
            },
        }
    }
}
