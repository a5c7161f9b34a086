//! How values look in the console's text columns: timestamps and
//! intervals as PostgreSQL prints them, so psql users read them the usual
//! way and scripts can cast them (`::timestamptz`, `::interval`).

use std::time::{SystemTime, UNIX_EPOCH};

/// A text cell; `None` is SQL NULL (psql shows it empty).
pub type Cell = Option<String>;

/// Any displayable value as a cell.
pub fn text(v: impl ToString) -> Cell {
    Some(v.to_string())
}

/// A rate or percentage with one decimal.
pub fn decimal(v: f64) -> Cell {
    v.is_finite().then(|| format!("{v:.1}"))
}

/// `2024-05-01 12:34:56.789012+00`: `timestamptz` output in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    timestamp_micros(micros)
}

/// [`timestamp`] from Unix microseconds.
pub fn timestamp_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let frac = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06}+00",
        of_day / 3600,
        (of_day % 3600) / 60,
        of_day % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic
/// Gregorian), by counting 400-year eras of 146097 days whose years start
/// in March, so the leap day is the last day of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `01:02:03.4`: `interval` output for a duration under a day or more
/// (hours keep counting past 24, as PostgreSQL does for `hh:mm:ss`).
pub fn interval(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    let tenths = (secs * 10.0).round() as u64;
    let whole = tenths / 10;
    let h = whole / 3600;
    let m = (whole % 3600) / 60;
    let s = whole % 60;
    let t = tenths % 10;
    if t == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{t}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_micros(0), "1970-01-01 00:00:00.000000+00");
        // 2000-03-01, after a century leap day.
        assert_eq!(
            timestamp_micros(951_868_800_000_000),
            "2000-03-01 00:00:00.000000+00"
        );
        assert_eq!(
            timestamp_micros(951_782_400_000_000 + 1),
            "2000-02-29 00:00:00.000001+00"
        );
        // 2024-12-31 23:59:59.5
        assert_eq!(
            timestamp_micros(1_735_689_599_500_000),
            "2024-12-31 23:59:59.500000+00"
        );
        assert_eq!(timestamp_micros(-1), "1969-12-31 23:59:59.999999+00");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(86_400 * 365)),
            "1971-01-01 00:00:00.000000+00"
        );
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Days since the epoch back from civil dates, the simple way.
        let mut days: i64 = 0;
        for year in 1970..2370i64 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let lengths = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            for (m, len) in lengths.iter().enumerate() {
                for d in 1..=*len {
                    assert_eq!(civil_from_days(days), (year, m as u32 + 1, d));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(interval(0.0), "00:00:00");
        assert_eq!(interval(65.25), "00:01:05.3");
        assert_eq!(interval(90_000.0), "25:00:00");
        assert_eq!(interval(-3.0), "00:00:00");
        assert_eq!(interval(f64::NAN), "00:00:00");
        assert_eq!(decimal(1.26), Some("1.3".into()));
        assert_eq!(decimal(f64::INFINITY), None);
    }
}
