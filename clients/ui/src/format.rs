//! Words and numbers as the screens show them.

use postern_app::DeliveryState;
use postern_core::UnixTime;

/// The local time of day (`HH:MM`) of `t`, or its date and time when it
/// is not on the same local day as `now`. `offset_minutes` is the local
/// time's offset from UTC.
pub fn time(t: UnixTime, now: UnixTime, offset_minutes: i32) -> String {
    let local = |u: UnixTime| -> i64 {
        i64::try_from(u.millis() / 1000)
            .unwrap_or(0)
            .saturating_add(i64::from(offset_minutes) * 60)
    };
    let (secs, today) = (local(t), local(now));
    let (day, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let hm = format!("{:02}:{:02}", rem / 3600, (rem % 3600) / 60);
    if day == today.div_euclid(86_400) {
        return hm;
    }
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02} {hm}")
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A byte count: `512 B`, `1.5 KB`, `2.3 MB`.
pub fn size(bytes: u64) -> String {
    const K: f64 = 1000.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} KB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MB", b / (K * K))
    } else {
        format!("{:.1} GB", b / (K * K * K))
    }
}

/// `m:ss` for a duration in milliseconds.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// How long ago, coarsely: `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(then: UnixTime, now: UnixTime) -> String {
    let s = now.millis().saturating_sub(then.millis()) / 1000;
    match s {
        0..=59 => "just now".to_owned(),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A delivery state in words.
pub fn delivery(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Queued => "queued",
        DeliveryState::Sent => "in the network",
        DeliveryState::Stored => "stored at their relay",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    }
}

/// What a passphrase is worth, roughly, for the hint under its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strength {
    /// Too short to be accepted.
    TooShort,
    /// Accepted, but guessable.
    Weak,
    /// Fair.
    Fair,
    /// Strong.
    Strong,
}

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// A rough strength estimate: length and the kinds of characters used.
/// (Argon2id makes each guess expensive; this only steers the user away
/// from short and single-kind passphrases.)
pub fn strength(p: &str) -> Strength {
    let n = p.chars().count();
    if n < MIN_PASSPHRASE_CHARS {
        return Strength::TooShort;
    }
    let kinds = [
        p.chars().any(|c| c.is_lowercase()),
        p.chars().any(|c| c.is_uppercase()),
        p.chars().any(|c| c.is_ascii_digit()),
        p.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    let words = p.split_whitespace().count();
    match (n, kinds, words) {
        (20.., _, _) | (_, _, 4..) => Strength::Strong,
        (12.., 3.., _) => Strength::Strong,
        (12.., _, _) | (_, 3.., _) => Strength::Fair,
        _ => Strength::Weak,
    }
}

impl Strength {
    /// The hint shown.
    pub fn hint(self) -> &'static str {
        match self {
            Strength::TooShort => "too short: at least 8 characters",
            Strength::Weak => "weak: longer is better (four or more words work well)",
            Strength::Fair => "fair",
            Strength::Strong => "strong",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: UnixTime =
        UnixTime(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 43_200_000);

    #[test]
    fn times_today_show_the_hour_and_older_ones_the_date() {
        assert_eq!(time(NOON, NOON, 0), "12:00");
        assert_eq!(time(NOON, NOON, 90), "13:30");
        let yesterday = UnixTime(NOON.millis() - 86_400_000);
        assert!(time(yesterday, NOON, 0).ends_with(" 12:00"));
        assert_eq!(time(UnixTime(0), NOON, 0), "1970-01-01 00:00");
    }

    #[test]
    fn sizes_durations_and_ages_read_naturally() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1_500), "1.5 KB");
        assert_eq!(size(2_300_000), "2.3 MB");
        assert_eq!(duration(65_000), "1:05");
        assert_eq!(ago(UnixTime(0), UnixTime(30_000)), "just now");
        assert_eq!(ago(UnixTime(0), UnixTime(7_200_000)), "2 h ago");
    }

    #[test]
    fn short_passphrases_are_refused_and_long_ones_are_strong() {
        assert_eq!(strength("abc"), Strength::TooShort);
        assert_eq!(strength("abcdefgh"), Strength::Weak);
        assert_eq!(strength("abcdefgh1!"), Strength::Fair);
        assert_eq!(strength("correct horse battery staple"), Strength::Strong);
    }
}
