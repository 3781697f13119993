//! The vector width the Mali kernel variants (`vendor/mali.cl`, `vendor/mali_attention.cl`) are built at, chosen
//! from the widths the device (or the phone its profile names) reports. Pure: unit-tested without a device.
//!
//! Arm's Mali guidance asks for the device's preferred vector width and for loads of up to 128 bits; the kernels'
//! loads and products are float vectors of this width (1, 2 or 4 floats: 32 to 128 bits). The device reports its
//! width through `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT`, else `CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT`; none of the
//! bundled Mali profiles shows either (their sources print `null`), so there the stated default, 4 (128 bits, what
//! the guidance recommends for every Mali since Midgard), applies. Nothing here has been measured on a Mali.

use crate::runtime::Capabilities;

/// Floats per vector load and product in a Mali kernel variant: 1, 2 or 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct VectorWidth(u8);

/// Where a [`VectorWidth`] came from, for `tlite devices` and the phone plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum WidthSource {
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT`.
    Preferred,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT` (the preferred width unknown).
    Native,
    /// Neither is known: [`VectorWidth::DEFAULT`].
    Default,
}

impl VectorWidth {
    /// Every width the kernels are built at.
    pub const ALL: [VectorWidth; 3] = [VectorWidth(1), VectorWidth(2), VectorWidth(4)];
    /// The width where the device does not say: 128-bit vectors, as Arm's guidance recommends.
    pub const DEFAULT: VectorWidth = VectorWidth(4);
    /// The widest: 128 bits of floats, the widest load the guidance recommends.
    const MAX: u32 = 4;

    /// The width of `n` floats, `None` unless `n` is 1, 2 or 4.
    pub fn new(n: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.floats() == n)
    }

    /// The width for a device reporting `preferred` and `native` float widths (0: unknown): the preferred one,
    /// else the native one, rounded down to a power of two and capped at 4; the default where neither is known.
    pub fn from_reported(preferred: u32, native: u32) -> (Self, WidthSource) {
        let pick = |w: u32| {
            let capped = w.min(Self::MAX);
            VectorWidth(1 << (u32::BITS - 1 - capped.leading_zeros()))
        };
        match (preferred, native) {
            (0, 0) => (Self::DEFAULT, WidthSource::Default),
            (0, n) => (pick(n), WidthSource::Native),
            (p, _) => (pick(p), WidthSource::Preferred),
        }
    }

    /// The width for `caps` (under a profile, the phone's widths: see `DeviceProfile::apply`).
    pub fn for_caps(caps: &Capabilities) -> (Self, WidthSource) {
        Self::from_reported(
            caps.preferred_vector_width_float,
            caps.native_vector_width_float,
        )
    }

    /// Floats per vector.
    pub fn floats(self) -> usize {
        usize::from(self.0)
    }

    /// The value of the kernels' width define (`MV_VW`, `MALI_VW`).
    pub(crate) fn define_value(self) -> &'static str {
        match self.0 {
            1 => "1",
            2 => "2",
            _ => "4",
        }
    }
}

impl std::fmt::Display for VectorWidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => write!(f, "float"),
            n => write!(f, "float{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_width_wins_then_the_native_then_the_default() {
        assert_eq!(
            VectorWidth::from_reported(0, 0),
            (VectorWidth(4), WidthSource::Default)
        );
        assert_eq!(
            VectorWidth::from_reported(2, 4),
            (VectorWidth(2), WidthSource::Preferred)
        );
        assert_eq!(
            VectorWidth::from_reported(0, 1),
            (VectorWidth(1), WidthSource::Native)
        );
        // Wider than 128 bits is capped; odd widths round down to a power of two.
        assert_eq!(VectorWidth::from_reported(16, 0).0, VectorWidth(4));
        assert_eq!(VectorWidth::from_reported(3, 0).0, VectorWidth(2));
        assert_eq!(VectorWidth::from_reported(1, 8).0, VectorWidth(1));
    }

    #[test]
    fn only_the_built_widths_exist() {
        for n in [1, 2, 4] {
            let w = VectorWidth::new(n).expect("1, 2 and 4 are built widths");
            assert_eq!(w.floats(), n);
            assert_eq!(w.define_value(), n.to_string());
        }
        assert!(
            VectorWidth::new(0).is_none()
                && VectorWidth::new(3).is_none()
                && VectorWidth::new(8).is_none()
        );
        assert_eq!(VectorWidth::DEFAULT.to_string(), "float4");
        assert_eq!(VectorWidth(1).to_string(), "float");
    }
}
