//! Wall-clock time in the forms the lock file uses: milliseconds since the
//! epoch, `Date#toISOString` output, and `Date.parse` of ISO-8601 input.
//! The JS globals are never consulted, so a test's fake timers cannot leak in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch by the real system clock.
pub fn now_ms() -> f64 {
  match SystemTime::now().duration_since(UNIX_EPOCH) {
    Ok(d) => d.as_millis() as f64,
    Err(before) => -(before.duration().as_millis() as f64),
  }
}

/// `new Date(ms).toISOString()` for years 0..=9999.
pub fn iso(ms: f64) -> String {
  let ms = ms.floor() as i64;
  let days = ms.div_euclid(86_400_000);
  let in_day = ms.rem_euclid(86_400_000);
  let (y, m, d) = civil_from_days(days);
  let (h, min) = (in_day / 3_600_000, in_day / 60_000 % 60);
  let (s, milli) = (in_day / 1000 % 60, in_day % 1000);
  format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// `Date.parse` for the ISO-8601 forms JavaScript accepts: `YYYY-MM-DD`,
/// optionally `THH:MM`, `:SS`, `.sss`, and `Z` or `±HH:MM`. A date-only form is
/// UTC; a date-time without an offset is read as UTC too (the lock writer
/// always writes `Z`).
pub fn parse_iso(text: &str) -> Option<f64> {
  let b = text.as_bytes();
  let num = |from: usize, len: usize| -> Option<i64> {
    let part = b.get(from..from + len)?;
    part.iter().all(u8::is_ascii_digit).then(|| std::str::from_utf8(part).ok()?.parse().ok())?
  };
  let (year, mut i) = (num(0, 4)?, 4);
  let (month, day) = (expect(b, i, b'-').and_then(|_| num(5, 2))?, num(8, 2)?);
  if b.get(7) != Some(&b'-') {
    return None;
  }
  i += 6;
  let (mut hour, mut minute, mut second, mut milli) = (0, 0, 0, 0.0);
  let mut offset_min = 0;
  if i < b.len() {
    expect(b, i, b'T')?;
    hour = num(i + 1, 2)?;
    expect(b, i + 3, b':')?;
    minute = num(i + 4, 2)?;
    i += 6;
    if b.get(i) == Some(&b':') {
      second = num(i + 1, 2)?;
      i += 3;
      if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
          return None;
        }
        let frac: String = std::str::from_utf8(&b[i + 1..i + 1 + digits]).ok()?.into();
        milli = format!("0.{frac}").parse::<f64>().ok()? * 1000.0;
        milli = milli.floor();
        i += 1 + digits;
      }
    }
    match b.get(i) {
      Some(b'Z') if i + 1 == b.len() => {}
      Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
        let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
        expect(b, i + 3, b':')?;
        offset_min = (oh * 60 + om) * if *sign == b'+' { 1 } else { -1 };
      }
      None => {}
      _ => return None,
    }
  }
  let valid = (1..=12).contains(&month)
    && (1..=days_in_month(year, month)).contains(&day)
    && (hour < 24 || (hour == 24 && minute == 0 && second == 0 && milli == 0.0))
    && minute < 60
    && second < 60;
  if !valid {
    return None;
  }
  let days = days_from_civil(year, month, day);
  let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
  Some(secs as f64 * 1000.0 + milli)
}

fn expect(b: &[u8], i: usize, c: u8) -> Option<()> {
  (b.get(i) == Some(&c)).then_some(())
}

fn days_in_month(y: i64, m: i64) -> i64 {
  match m {
    2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
    2 => 28,
    4 | 6 | 9 | 11 => 30,
    _ => 31,
  }
}

// Howard Hinnant's civil calendar algorithms (days relative to 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
  let y = if m <= 2 { y - 1 } else { y };
  let era = y.div_euclid(400);
  let yoe = y - era * 400;
  let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
  let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
  let z = z + 719_468;
  let era = z.div_euclid(146_097);
  let doe = z - era * 146_097;
  let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
  let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  let mp = (5 * doy + 2) / 153;
  let d = doy - (153 * mp + 2) / 5 + 1;
  let m = if mp < 10 { mp + 3 } else { mp - 9 };
  (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn iso_matches_to_iso_string() {
    assert_eq!(iso(0.0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso(1_780_142_400_123.0), "2026-05-30T12:00:00.123Z");
    assert_eq!(iso(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
  }

  #[test]
  fn parse_iso_reads_what_iso_writes() {
    for ms in [0.0, 1_780_142_400_123.0, 951_782_400_000.0, 4_102_444_799_999.0] {
      assert_eq!(parse_iso(&iso(ms)), Some(ms));
    }
  }

  #[test]
  fn parse_iso_accepts_offsets_and_short_forms() {
    assert_eq!(parse_iso("1970-01-01"), Some(0.0));
    assert_eq!(parse_iso("1970-01-01T01:00+01:00"), Some(0.0));
    assert_eq!(parse_iso("1970-01-01T00:00:01.5Z"), Some(1500.0));
  }

  #[test]
  fn parse_iso_rejects_garbage() {
    for bad in ["", "yesterday", "2026-13-01", "2026-02-30T00:00Z", "2026-01-01T00:00:00Zjunk"] {
      assert_eq!(parse_iso(bad), None, "{bad}");
    }
  }
}

#[cfg(test)]
mod properties {
  use super::*;
  use proptest::prelude::*;

  proptest! {
    #[test]
    fn parse_iso_never_panics(text in "\\PC{0,40}") {
      let _ = parse_iso(&text);
    }

    #[test]
    fn iso_round_trips(ms in 0i64..253_402_300_799_999) {
      prop_assert_eq!(parse_iso(&iso(ms as f64)), Some(ms as f64));
    }
  }
}
