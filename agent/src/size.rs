//! Byte sizes, written as docker writes them (go-units `RAMInBytes`, which `--memory`,
//! `--shm-size` and the other size flags use): a number, fractions allowed, then an optional
//! unit `b`, `k`, `m`, `g`, `t` or `p` in any case, optionally followed by `i` and/or `b`
//! (`512m`, `2GiB`, `1.5g`, `2 g`, `64Ki`), in binary multiples. The node's own settings
//! (`task_output_limit`) take the same grammar, so one spelling works everywhere.

/// Bytes in `v`. Errors say what was wrong and what is accepted.
pub fn parse(v: &str) -> Result<u64, String> {
    let s = v.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a size such as 4096, 512m or 2g"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix('b')
        .filter(|u| !u.is_empty())
        .unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("{v:?} has an unknown unit; use b, k, m, g, t or p")),
    };
    let bytes = n * mult;
    // i64::MAX: the Engine API's fields are int64.
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("{v:?} is too large"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_spellings() {
        let cases = [
            ("512m", 512 << 20),
            ("2g", 2 << 30),
            ("2GB", 2 << 30),
            ("2GiB", 2 << 30),
            ("1.5g", 3 << 29),
            // The node's settings used to refuse fractions; they now read as docker does.
            ("1.5G", 3 << 29),
            ("100", 100),
            ("4096", 4096),
            ("0", 0),
            ("1k", 1024),
            ("512K", 512 << 10),
            ("64Ki", 64 << 10),
            ("64m", 64 << 20),
            ("1G", 1 << 30),
            ("2 g", 2 << 30),
            ("1p", 1 << 50),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
        for s in ["", "abc", "-1g", "5x", "1.2.3m", "1.5 gigs"] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert!(parse("lots").unwrap_err().contains("not a size"));
        assert!(parse("5x").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999T").unwrap_err().contains("too large"));
    }
}
