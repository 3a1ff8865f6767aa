//! Business hours: `business_hours = ["Mon-Fri 08:00-17:00"]` and `holidays` in the PBX's time
//! zone. Evaluated in userspace only (DST by the time-zone database); the daemon flips what the
//! kernel applies at each window edge (`next_edge`), so nothing per packet reads a calendar.
use anyhow::{Result, bail};
use jiff::{
    Timestamp, ZonedDateTime,
    civil::{Date, Weekday},
    tz::TimeZone,
};

/// One window: on the listed days, from `start` to `end` minutes after midnight. `end` below
/// `start` crosses midnight (the window ends the next day); 24:00 is the end of the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Monday = 0.
    pub days: [bool; 7],
    pub start: u16,
    pub end: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub tz: TimeZone,
    pub windows: Vec<Window>,
    pub holidays: Vec<Date>,
}

impl Eq for Schedule {}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Result<usize> {
    let l = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| l == *d || l == full_name(d))
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn full_name(d: &str) -> &'static str {
    match d {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn time(s: &str) -> Result<u16> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a time (HH:MM)"))?;
    let (h, m): (u16, u16) = match (h.parse(), m.parse()) {
        (Ok(h), Ok(m)) if m < 60 && (h < 24 || (h == 24 && m == 0)) => (h, m),
        _ => bail!("{s:?} is not a time from 00:00 to 24:00"),
    };
    Ok(h * 60 + m)
}

/// Parses `"Mon-Fri 08:00-17:00"`, `"Sat,Sun 10:00-14:00"`, `"Mon-Sun 22:00-06:00"`.
pub fn parse_window(s: &str) -> Result<Window> {
    let (days_text, times) = s.trim().split_once(char::is_whitespace).ok_or_else(|| {
        anyhow::anyhow!("{s:?}: write days then hours, e.g. \"Mon-Fri 08:00-17:00\"")
    })?;
    let mut days = [false; 7];
    for part in days_text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    let (a, b) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("{times:?} is not hours like 08:00-17:00"))?;
    let (start, end) = (time(a.trim())?, time(b.trim())?);
    if start == end {
        bail!("{times:?} is an empty window");
    }
    Ok(Window { days, start, end })
}

impl Schedule {
    /// Whether `t` is inside business hours (never on a holiday).
    pub fn is_business(&self, t: Timestamp) -> bool {
        let z = t.to_zoned_datetime(self.tz.clone());
        self.is_business_zoned(&z)
    }

    fn is_business_zoned(&self, z: &ZonedDateTime) -> bool {
        if self.holidays.contains(&z.date()) {
            return false;
        }
        let today = weekday_index(z.weekday());
        let yesterday = (today + 6) % 7;
        let minute = z.hour() as u16 * 60 + z.minute() as u16;
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[today] && (w.start..w.end).contains(&minute)
            } else {
                // Across midnight: the evening part on its day, the morning part the day after.
                (w.days[today] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }

    /// The first minute after `t` at which `is_business` changes (within 8 days; none when the
    /// verdict never changes, e.g. no windows).
    pub fn next_edge(&self, t: Timestamp) -> Option<Timestamp> {
        let now = self.is_business(t);
        // Minute boundaries: the windows and the days start on them (time zones' offsets are
        // whole minutes).
        let first = (t.as_second().div_euclid(60) + 1) * 60;
        (0..8 * 24 * 60)
            .map(|i| Timestamp::from_second(first + i * 60).expect("in range"))
            .find(|m| self.is_business(*m) != now)
    }
}

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, civil: &str) -> Timestamp {
        civil
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned_datetime(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
    }

    fn office(tz: &str, windows: &[&str], holidays: &[&str]) -> Schedule {
        Schedule {
            tz: TimeZone::get(tz).unwrap(),
            windows: windows.iter().map(|w| parse_window(w).unwrap()).collect(),
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn weekdays_and_hours() {
        let s = office(
            "America/New_York",
            &["Mon-Fri 08:00-17:00"],
            &["2026-12-25"],
        );
        // 2026-12-04 is a Friday.
        assert!(s.is_business(at("America/New_York", "2026-12-04T16:59")));
        assert!(
            !s.is_business(at("America/New_York", "2026-12-04T17:00")),
            "5 p.m."
        );
        assert!(
            !s.is_business(at("America/New_York", "2026-12-05T10:00")),
            "Saturday"
        );
        assert!(
            !s.is_business(at("America/New_York", "2026-12-25T10:00")),
            "holiday"
        );
        assert!(s.is_business(at("America/New_York", "2026-12-24T10:00")));
        // The edge: from Friday 16:30 the next change is at 17:00 local.
        assert_eq!(
            s.next_edge(at("America/New_York", "2026-12-04T16:30")),
            Some(at("America/New_York", "2026-12-04T17:00"))
        );
        // From Friday evening, Monday 08:00.
        assert_eq!(
            s.next_edge(at("America/New_York", "2026-12-04T18:00")),
            Some(at("America/New_York", "2026-12-07T08:00"))
        );
    }

    #[test]
    fn windows_across_midnight_and_day_lists() {
        let s = office("UTC", &["Sat,Sun 22:00-06:00", "Wed 12:00-24:00"], &[]);
        // 2026-12-05 Saturday 23:00, Sunday 05:59 (Saturday's window), Monday 05:00 (Sunday's).
        assert!(s.is_business(at("UTC", "2026-12-05T23:00")));
        assert!(s.is_business(at("UTC", "2026-12-06T05:59")));
        assert!(s.is_business(at("UTC", "2026-12-07T05:00")));
        assert!(!s.is_business(at("UTC", "2026-12-07T06:00")));
        assert!(
            !s.is_business(at("UTC", "2026-12-05T05:00")),
            "Friday's night is not listed"
        );
        assert!(
            s.is_business(at("UTC", "2026-12-09T23:59")),
            "Wednesday to midnight"
        );
        assert!(!s.is_business(at("UTC", "2026-12-10T00:00")));
        let w = parse_window("Fri-Mon 09:00-10:00").unwrap();
        assert_eq!(
            w.days,
            [true, false, false, false, true, true, true],
            "wraps the week"
        );
    }

    #[test]
    fn dst_change_days() {
        // 2026-03-08: New York springs forward at 02:00 (to 03:00); 2026-11-01 falls back.
        let s = office("America/New_York", &["Mon-Sun 08:00-17:00"], &[]);
        let spring = at("America/New_York", "2026-03-08T08:00");
        assert!(s.is_business(spring));
        assert!(!s.is_business(Timestamp::from_second(spring.as_second() - 60).unwrap()));
        // 08:00 EDT is 12:00 UTC, the day before it was 13:00 UTC.
        assert_eq!(spring.as_second() % 86400, 12 * 3600);
        assert_eq!(
            at("America/New_York", "2026-03-07T08:00").as_second() % 86400,
            13 * 3600
        );
        let fall = at("America/New_York", "2026-11-01T17:00");
        assert_eq!(
            s.next_edge(Timestamp::from_second(fall.as_second() - 600).unwrap()),
            Some(fall)
        );
        assert_eq!(fall.as_second() % 86400, 22 * 3600, "17:00 EST = 22:00 UTC");
        // A window in the skipped hour still ends where it should.
        let night = office("America/New_York", &["Sun 01:30-02:30"], &[]);
        assert!(night.is_business(at("America/New_York", "2026-03-08T01:45")));
    }

    #[test]
    fn bad_windows() {
        for (w, why) in [
            ("Mon-Fri", "write days then hours"),
            ("Mon-Fry 08:00-17:00", "is not a day"),
            ("Mon 8-17", "is not a time"),
            ("Mon 08:00-25:00", "from 00:00 to 24:00"),
            ("Mon 08:61-09:00", "from 00:00 to 24:00"),
            ("Mon 08:00-08:00", "empty window"),
        ] {
            let e = parse_window(w).unwrap_err().to_string();
            assert!(e.contains(why), "{w}: {e}");
        }
    }
}
