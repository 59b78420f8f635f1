//! Limits on what one record may hold, so that no input can exhaust memory or stack or write a
//! value the lake's readers cannot read. A record past a limit is a dead letter with a reason of
//! its own; the stream goes on.
//!
//! Every check is O(1) or rides on a scan the record gets anyway: the record's length is known,
//! JSONB nesting is counted by the cursor that already reads `hot_attributes`, a row's cells are
//! counted as they are added. Value ranges (i64, Decimal128(38, s), timestamps of years 1 to
//! 9999) are not settings: they are what the lake's types hold (see `decode::value`).

use serde::{Deserialize, Serialize};

/// The `[limits]` section of the configuration.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest record (Kafka message value, file line) decoded, in bytes; a larger one is a dead
    /// letter `record_too_large`. A file line past it is not held in memory whole: its dead
    /// letter keeps its first `max_record_bytes` bytes.
    pub max_record_bytes: usize,
    /// Most attribute columns one row may set (hot attributes in one `hot_attributes` object,
    /// and all the changes of one entity in one transaction); past it: `too_many_attributes`.
    pub max_attributes_per_row: usize,
    /// Deepest nesting of arrays and objects in a JSONB value (`hot_attributes`, a json
    /// attribute): `json_too_deep`. 128 is serde_json's own limit, so every reader built on it
    /// can read what the lake holds.
    pub max_json_depth: usize,
    /// Largest JSONB value (`hot_attributes` as a whole, one json attribute), in bytes:
    /// `json_too_large`.
    pub max_json_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_record_bytes: 8 << 20, max_attributes_per_row: 4096, max_json_depth: 128, max_json_bytes: 1 << 20 }
    }
}

impl Limits {
    /// The first rule broken, as (key, rule).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_record_bytes < 1024 {
            return Err(("limits.max_record_bytes", "must be at least 1024"));
        }
        if self.max_attributes_per_row == 0 {
            return Err(("limits.max_attributes_per_row", "must be positive"));
        }
        if self.max_json_depth == 0 {
            return Err(("limits.max_json_depth", "must be positive"));
        }
        if self.max_json_bytes == 0 {
            return Err(("limits.max_json_bytes", "must be positive"));
        }
        if self.max_json_bytes > self.max_record_bytes {
            return Err(("limits.max_json_bytes", "must be at most limits.max_record_bytes"));
        }
        Ok(())
    }
}
