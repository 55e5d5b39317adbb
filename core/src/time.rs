//! Time as the core sees it: a value handed in by the caller, never read
//! from a clock.

/// Milliseconds since the Unix epoch, supplied by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// This time plus `ms` milliseconds, saturating.
    pub fn plus_millis(self, ms: u64) -> UnixTime {
        UnixTime(self.0.saturating_add(ms))
    }

    /// The same instant as a `SystemTime`, without reading any clock
    /// (valid on wasm32, where `SystemTime::now` panics).
    pub(crate) fn to_system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0)
    }
}
