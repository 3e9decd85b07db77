//! Kubernetes quantities (`20Gi`) and durations (`PT2H` or seconds).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Parses a Kubernetes quantity into bytes (`20Gi`, `500M`, `1024`).
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        "not a quantity: expected a number with an optional unit such as 20Gi".to_string()
    })?;
    let mult: f64 = match unit {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: use Ki, Mi, Gi, Ti, Pi, k, M, G, T or P"
            ));
        }
    };
    Ok((value * mult) as u64)
}

/// Bytes in binary units, as tables show them (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A timeout: an ISO-8601 duration (`PT2H`) or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timeout {
    /// Whole seconds.
    Seconds(u64),
    /// ISO-8601 duration text.
    Iso(String),
}

impl JsonSchema for Timeout {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timeout".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"x-kubernetes-int-or-string": true})
    }
}

impl Timeout {
    /// The timeout in seconds.
    pub fn seconds(&self) -> Result<u64, String> {
        match self {
            Timeout::Seconds(s) => Ok(*s),
            Timeout::Iso(text) => parse_duration(text),
        }
    }
}

/// Parses an ISO-8601 duration (`PT2H`, `P1DT30M`) or integer seconds into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let span: jiff::Span = text.parse().map_err(|_| {
        "not a duration: use ISO-8601 such as PT2H or a number of seconds".to_string()
    })?;
    if span.get_years() != 0 || span.get_months() != 0 || span.get_weeks() != 0 {
        return Err("years, months and weeks are not allowed: use days (P7D) or hours".into());
    }
    let secs = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|e| format!("cannot be measured in seconds: {e}"))?;
    if secs < 0.0 {
        return Err("must not be negative".into());
    }
    Ok(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("20Gi"), Ok(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_quantity("1k"), Ok(1000));
        assert_eq!(parse_quantity("512"), Ok(512));
        assert!(parse_quantity("20GB").is_err());
        assert!(parse_quantity("Gi").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT2H"), Ok(7200));
        assert_eq!(parse_duration("P1DT30M"), Ok(86400 + 1800));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("two hours").is_err());
        assert!(parse_duration("P1M").is_err());
    }
}
