//! Calendar dates without a time zone: the shop's local day, weekdays, and
//! the days customers name ("Friday", "tomorrow", "the 14th") resolved
//! against today.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::intent::DateRef;

/// A civil date, `YYYY-MM-DD` in JSON and in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    pub fn from_days(days: i64) -> Self {
        Self { days }
    }

    /// Today in UTC, shifted by the shop's offset from UTC in minutes.
    pub fn today(utc_offset_minutes: i32) -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + i64::from(utc_offset_minutes) * 60;
        Self::from_days(secs.div_euclid(86_400))
    }

    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<Self> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Self::from_days(era * 146_097 + doe - 719_468))
    }

    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// Monday is 0.
    pub fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday.
        ((self.days + 3).rem_euclid(7)) as u8
    }

    pub fn plus_days(self, n: i64) -> Self {
        Self::from_days(self.days + n)
    }

    pub fn days_until(self, other: Date) -> i64 {
        other.days - self.days
    }

    /// The date a customer meant, never in the past: a weekday is the next
    /// one after today, a day of the month this month or the next.
    pub fn resolve(self, r: DateRef) -> Date {
        match r {
            DateRef::InDays(n) => self.plus_days(i64::from(n)),
            DateRef::Weekday(w) => {
                let ahead = (i64::from(w) - i64::from(self.weekday())).rem_euclid(7);
                self.plus_days(if ahead == 0 { 7 } else { ahead })
            }
            DateRef::DayOfMonth(d) => {
                let (y, m, today) = self.ymd();
                let (y, m) = if u32::from(d) >= today {
                    (y, m)
                } else if m == 12 {
                    (y + 1, 1)
                } else {
                    (y, m + 1)
                };
                let d = u32::from(d).min(days_in_month(y, m));
                Date::from_ymd(y, m, d).unwrap_or(self)
            }
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().splitn(3, '-');
        let y = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        let d = it.next()?.parse().ok()?;
        Self::from_ymd(y, m, d)
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a YYYY-MM-DD date: {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_weekdays() {
        let d = Date::from_ymd(2026, 11, 24).unwrap();
        assert_eq!(d.to_string(), "2026-11-24");
        assert_eq!(d.weekday(), 1, "a Tuesday");
        assert_eq!(
            Date::parse("2024-02-29").unwrap().plus_days(1).to_string(),
            "2024-03-01"
        );
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::from_days(0).to_string(), "1970-01-01");
    }

    #[test]
    fn resolves_named_days_forward() {
        let tue = Date::from_ymd(2026, 11, 24).unwrap();
        assert_eq!(tue.resolve(DateRef::Weekday(5)).to_string(), "2026-11-28");
        assert_eq!(tue.resolve(DateRef::Weekday(1)).to_string(), "2026-12-01");
        assert_eq!(tue.resolve(DateRef::InDays(1)).to_string(), "2026-11-25");
        assert_eq!(
            tue.resolve(DateRef::DayOfMonth(3)).to_string(),
            "2026-12-03"
        );
        assert_eq!(
            tue.resolve(DateRef::DayOfMonth(30)).to_string(),
            "2026-11-30"
        );
    }
}
