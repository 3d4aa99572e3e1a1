//! Human units: byte counts with binary prefixes (`1.2 MiB`), rates
//! (`340 KiB/s`), and packet rates (`1.2k/s`).

const BYTE_UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `340 GiB`. At most 8 characters.
pub fn bytes(n: u64) -> String {
    bytes_f64(n as f64)
}

fn bytes_f64(n: f64) -> String {
    let mut value = n.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < BYTE_UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", value.round() as u64)
    } else {
        format!("{} {}", one_decimal_below_100(value), BYTE_UNITS[unit])
    }
}

/// `0 B/s`, `1.5 KiB/s`, `120 MiB/s`. At most 10 characters.
pub fn byte_rate(per_second: f64) -> String {
    format!("{}/s", bytes_f64(per_second))
}

/// Packets per second: `0/s`, `3.5/s`, `120/s`, `1.2k/s`, `45M/s`. At most
/// 7 characters.
pub fn packet_rate(per_second: f64) -> String {
    format!("{}/s", count_f64(per_second))
}

/// A count with SI suffixes: `999`, `1.2k`, `45M`.
pub fn count(n: u64) -> String {
    count_f64(n as f64)
}

fn count_f64(n: f64) -> String {
    const UNITS: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let mut value = n.max(0.0);
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 && value.fract() == 0.0 {
        format!("{}", value as u64)
    } else {
        format!("{}{}", one_decimal_below_100(value), UNITS[unit])
    }
}

/// `1.5`, `12.0`, `340`; a value that would round up to the next unit's
/// range keeps its integer form (`1023`).
fn one_decimal_below_100(value: f64) -> String {
    if value < 99.95 {
        format!("{value:.1}")
    } else {
        format!("{}", value.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_use_binary_prefixes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
        assert_eq!(bytes(1023 * 1024), "1023 KiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_fit_their_columns() {
        assert_eq!(byte_rate(0.0), "0 B/s");
        assert_eq!(byte_rate(2048.0), "2.0 KiB/s");
        assert_eq!(packet_rate(0.0), "0/s");
        assert_eq!(packet_rate(2.5), "2.5/s");
        assert_eq!(packet_rate(1234.0), "1.2k/s");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1.0k");
        for n in [
            0u64,
            1,
            999,
            1000,
            1023,
            1024,
            99_999,
            1 << 20,
            1 << 40,
            u64::MAX,
        ] {
            for scale in [1.0, 0.999, 1.001] {
                let v = n as f64 * scale;
                assert!(byte_rate(v).chars().count() <= 10, "{}", byte_rate(v));
                assert!(packet_rate(v).chars().count() <= 7, "{}", packet_rate(v));
            }
        }
    }
}
