//! `--mem-budget`: how much of the device's memory a model may take, as a share of its global memory or a size.

use std::fmt;

use super::memory::size;

/// The default budget: this percentage of the device's global memory. Phone drivers report as global memory the
/// share of RAM the GPU may take; the rest of it is left to the driver's own allocations (queues, kernel
/// arguments, fragmentation) and to whatever else the phone runs.
pub const DEFAULT_BUDGET_PERCENT: u8 = 75;

/// How much device memory tlite may plan to use (`--mem-budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemBudget {
    /// This percentage (1-100) of the device's global memory.
    Percent(u8),
    /// This many bytes; never more than the device's global memory.
    Bytes(u64),
}

impl Default for MemBudget {
    fn default() -> Self {
        MemBudget::Percent(DEFAULT_BUDGET_PERCENT)
    }
}

impl MemBudget {
    /// The budget in bytes on a device with `global_mem` bytes (0: the device does not say), or `None` when it
    /// cannot be known (a percentage of an unknown size).
    pub fn bytes(&self, global_mem: u64) -> Option<u64> {
        match (*self, global_mem) {
            (MemBudget::Percent(_), 0) => None,
            (MemBudget::Percent(p), g) => Some((u128::from(g) * u128::from(p) / 100) as u64),
            (MemBudget::Bytes(b), 0) => Some(b),
            (MemBudget::Bytes(b), g) => Some(b.min(g)),
        }
    }
}

impl std::str::FromStr for MemBudget {
    type Err = String;

    /// `75%`, or a size: `1536MiB`, `2GiB`, `1.5G`, `500M`, `1048576` (bytes). Units are binary (K = KiB).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = |why: &str| format!("invalid memory budget `{text}`: {why}");
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(MemBudget::Percent(p)),
                _ => Err(bad("a percentage must be a whole number from 1 to 100")),
            };
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| bad("expected a size such as 2GiB, 1536MiB or 75%"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => {
                return Err(bad(&format!(
                    "unknown unit `{other}` (use B, KiB, MiB, GiB or TiB)"
                )))
            }
        };
        let bytes = value * scale as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
            return Err(bad("the budget must be at least 1 byte"));
        }
        Ok(MemBudget::Bytes(bytes as u64))
    }
}

impl fmt::Display for MemBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemBudget::Percent(p) => write!(f, "{p}%"),
            MemBudget::Bytes(b) => f.write_str(&size(*b)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn budgets_parse_as_percentages_and_binary_sizes() {
        let cases = [
            ("75%", MemBudget::Percent(75)),
            (" 100 % ", MemBudget::Percent(100)),
            ("2GiB", MemBudget::Bytes(2 << 30)),
            ("1.5G", MemBudget::Bytes(3 << 29)),
            ("512mib", MemBudget::Bytes(512 << 20)),
            ("64 MB", MemBudget::Bytes(64 << 20)),
            ("4096", MemBudget::Bytes(4096)),
            ("1TiB", MemBudget::Bytes(1 << 40)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<MemBudget>(), Ok(want), "{text}");
        }
        for bad in [
            "0%", "101%", "-5%", "0", "0.2", "2XB", "GiB", "", "1e99GiB", "nan",
        ] {
            let e = bad.parse::<MemBudget>().unwrap_err();
            assert!(e.contains("invalid memory budget"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_budget_is_a_share_of_global_memory_and_never_more() {
        let g = 8u64 << 30;
        assert_eq!(MemBudget::Percent(75).bytes(g), Some(6 << 30));
        assert_eq!(MemBudget::Percent(100).bytes(u64::MAX), Some(u64::MAX));
        assert_eq!(MemBudget::Bytes(1 << 30).bytes(g), Some(1 << 30));
        assert_eq!(MemBudget::Bytes(64 << 30).bytes(g), Some(g));
        // A device that does not say: a size still applies, a share cannot.
        assert_eq!(MemBudget::Bytes(1 << 30).bytes(0), Some(1 << 30));
        assert_eq!(MemBudget::Percent(75).bytes(0), None);
        assert_eq!(
            MemBudget::default(),
            MemBudget::Percent(DEFAULT_BUDGET_PERCENT)
        );
        assert_eq!(MemBudget::Percent(75).to_string(), "75%");
        assert_eq!(MemBudget::Bytes(3 << 29).to_string(), "1.50 GiB");
    }
}
