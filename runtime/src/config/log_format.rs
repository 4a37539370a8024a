//! The log line formats accepted in `telemetry.log_format`.

use serde::{Deserialize, Serialize};

/// How log lines are written (`telemetry.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (`"human"`, the default): time, level, spans, target,
    /// message and fields, then `trace_id=… span_id=…` inside a span.
    #[default]
    Human,
    /// One JSON object per line (`"json"`): `timestamp`, `level`, `target`, `message`,
    /// `fields`, `spans`, and `trace_id` / `span_id` inside a span.
    Json,
}
