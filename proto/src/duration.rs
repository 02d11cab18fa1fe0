//! ISO-8601 durations as Batch sends them, including its "unlimited" spelling.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// What Batch returns for "unlimited": .NET `TimeSpan.MaxValue`.
pub const UNLIMITED: &str = "P10675199DT2H48M5.4775807S";

/// A Batch duration. `None` inside means unlimited (`-1` or `TimeSpan.MaxValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoDuration(pub Option<Duration>);

impl IsoDuration {
    /// Parses `PT1H30M`, `P7D`, `-1` or the TimeSpan.MaxValue spelling.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "-1" || t == UNLIMITED {
            return Ok(IsoDuration(None));
        }
        let d = iso8601::duration(t).map_err(|e| {
            format!("{s:?} is not an ISO-8601 duration such as \"PT30M\" or \"P7D\" ({e})")
        })?;
        let d: Duration = d.into();
        // Anything at or past TimeSpan.MaxValue is Batch's way of saying "no limit".
        if d.as_secs() >= 922_337_203_685 {
            return Ok(IsoDuration(None));
        }
        Ok(IsoDuration(Some(d)))
    }

    pub fn limit(&self) -> Option<Duration> {
        self.0
    }

    /// Formats as ISO-8601 (`PT1.5S`), or Batch's unlimited value.
    pub fn to_iso(&self) -> String {
        match self.0 {
            None => UNLIMITED.to_string(),
            Some(d) => {
                let secs = d.as_secs();
                let (days, rem) = (secs / 86_400, secs % 86_400);
                let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
                let nanos = d.subsec_nanos();
                let mut out = String::from("P");
                if days > 0 {
                    out.push_str(&format!("{days}D"));
                }
                if h > 0 || m > 0 || s > 0 || nanos > 0 || days == 0 {
                    out.push('T');
                    if h > 0 {
                        out.push_str(&format!("{h}H"));
                    }
                    if m > 0 {
                        out.push_str(&format!("{m}M"));
                    }
                    if s > 0 || nanos > 0 || (h == 0 && m == 0) {
                        if nanos > 0 {
                            let frac = format!("{:09}", nanos);
                            out.push_str(&format!("{s}.{}S", frac.trim_end_matches('0')));
                        } else {
                            out.push_str(&format!("{s}S"));
                        }
                    }
                }
                out
            }
        }
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_iso())
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IsoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_batch_forms() {
        let cases: &[(&str, Option<u64>)] = &[
            ("PT30M", Some(1800)),
            ("P7D", Some(7 * 86400)),
            ("PT1H30M5S", Some(5405)),
            ("PT0S", Some(0)),
            ("-1", None),
            (UNLIMITED, None),
        ];
        for (s, want) in cases {
            assert_eq!(
                IsoDuration::parse(s).unwrap().0.map(|d| d.as_secs()),
                *want,
                "{s}"
            );
        }
        assert!(IsoDuration::parse("30m").is_err());
        assert!(IsoDuration::parse("").is_err());
    }

    #[test]
    fn round_trips() {
        for s in ["PT30M", "P7D", "PT1H0M5S", "PT0S", "PT1.5S", UNLIMITED] {
            let d = IsoDuration::parse(s).unwrap();
            assert_eq!(
                IsoDuration::parse(&d.to_iso()).unwrap(),
                d,
                "{s} -> {}",
                d.to_iso()
            );
        }
        assert_eq!(IsoDuration::parse("PT90S").unwrap().to_iso(), "PT1M30S");
    }
}
