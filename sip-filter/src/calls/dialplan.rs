//! The dialled number: a Request-URI's user part rewritten to E.164 with the PBX's dial plan.
//!
//! `sip:+1-242-555-0100@pbx;user=phone`, `sip:9011882555@pbx`, `tel:%2B882555`, `sip:8095550100`
//! all become what a rule is written in: `+` and the digits. The steps, in order:
//! 1. the user part of a `sip:`/`sips:` URI, or the number of a `tel:` URI, without parameters;
//! 2. `%2B` (any case) is `+`; the visual separators `-.()` and spaces are dropped;
//! 3. `outside_line` is stripped when the number starts with it;
//! 4. `+` or `international_prefix` then means international: the rest is the E.164 number;
//!    `national_prefix` means national: `+country_code` and the rest;
//! 5. anything else, anything with a character other than a digit, and anything shorter than
//!    [`MIN_DIGITS`] is an internal extension or a local number, never matched against rules.
use std::fmt;

/// Numbers with fewer digits than this (after the outside line) are extensions or local
/// numbers: the shortest international numbers (+CC and four digits) have seven.
pub const MIN_DIGITS: usize = 7;

/// The PBX's dial plan (`[calls] country_code`, `international_prefix`, `national_prefix`,
/// `outside_line`); all digits, the last three may be empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialPlan {
    pub country_code: String,
    pub international_prefix: String,
    pub national_prefix: String,
    pub outside_line: String,
}

impl Default for DialPlan {
    /// North America: the example config's plan.
    fn default() -> Self {
        Self {
            country_code: "1".into(),
            international_prefix: "011".into(),
            national_prefix: "1".into(),
            outside_line: String::new(),
        }
    }
}

/// What a dialled string is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialled {
    /// An E.164 number: the digits after `+` (country code first).
    E164 { digits: String, how: How },
    /// An extension, a local number, or a name: rules do not apply.
    Internal(String),
}

/// How an E.164 number was dialled (for the log and `calls check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Plus,
    InternationalPrefix,
    National,
}

impl fmt::Display for Dialled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dialled::E164 { digits, .. } => write!(f, "+{digits}"),
            Dialled::Internal(s) => write!(f, "{s} (internal or local)"),
        }
    }
}

/// The user part of a Request-URI (or the number of a `tel:` URI), without parameters or
/// headers; `None` when the URI has no user part.
pub fn uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<');
    let lower = uri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("sips:") {
        &uri[5..]
    } else if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower.starts_with("tel:") {
        let n = &uri[4..];
        return Some(n.split([';', '?', '>']).next().unwrap_or(n));
    } else {
        return None;
    };
    let at = rest.find('@')?;
    let user = &rest[..at];
    Some(user.split([';', ':']).next().unwrap_or(user))
}

/// `%2B` to `+`, separators out: the string the rules see before the dial plan.
pub fn clean(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    let mut rest = user;
    while let Some(c) = rest.chars().next() {
        if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("%2b") {
            out.push('+');
            rest = &rest[3..];
            continue;
        }
        if !matches!(c, '-' | '.' | '(' | ')' | ' ') {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl DialPlan {
    /// The E.164 form of a dialled user part.
    pub fn normalise(&self, user: &str) -> Dialled {
        let cleaned = clean(user);
        let mut n = cleaned.as_str();
        if !self.outside_line.is_empty() && n.len() > self.outside_line.len() {
            n = n.strip_prefix(self.outside_line.as_str()).unwrap_or(n);
        }
        let internal = || Dialled::Internal(cleaned.clone());
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (how, e164) = if let Some(rest) = n.strip_prefix('+') {
            (How::Plus, rest.to_string())
        } else if !self.international_prefix.is_empty()
            && let Some(rest) = n.strip_prefix(self.international_prefix.as_str())
        {
            (How::InternationalPrefix, rest.to_string())
        } else if !self.national_prefix.is_empty()
            && let Some(rest) = n.strip_prefix(self.national_prefix.as_str())
        {
            (How::National, format!("{}{rest}", self.country_code))
        } else {
            return internal();
        };
        let digits = n.bytes().filter(u8::is_ascii_digit).count();
        if !digits_only(&e164) || digits < MIN_DIGITS {
            return internal();
        }
        Dialled::E164 { digits: e164, how }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanp() -> DialPlan {
        DialPlan {
            outside_line: "9".into(),
            ..DialPlan::default()
        }
    }

    fn europe() -> DialPlan {
        DialPlan {
            country_code: "49".into(),
            international_prefix: "00".into(),
            national_prefix: "0".into(),
            outside_line: String::new(),
        }
    }

    fn e164(p: &DialPlan, user: &str) -> String {
        match p.normalise(user) {
            Dialled::E164 { digits, .. } => format!("+{digits}"),
            Dialled::Internal(s) => format!("internal {s}"),
        }
    }

    #[test]
    fn uri_forms() {
        for (uri, user) in [
            ("sip:+12425550100@pbx.example.com", Some("+12425550100")),
            ("sips:011882555123@pbx;transport=tls", Some("011882555123")),
            ("SIP:101@192.0.2.1:5060", Some("101")),
            (
                "sip:+1-242-555-0100;isub=1@pbx;user=phone",
                Some("+1-242-555-0100"),
            ),
            ("sip:alice:secret@pbx", Some("alice")),
            (
                "tel:+882-555-123;phone-context=example.com",
                Some("+882-555-123"),
            ),
            ("<sip:%2B8825551234@pbx>", Some("%2B8825551234")),
            ("sip:pbx.example.com", None),
            ("mailto:x@y", None),
        ] {
            assert_eq!(uri_user(uri), user, "{uri}");
        }
    }

    #[test]
    fn north_america() {
        let p = nanp();
        for (dialled, want) in [
            ("+8825551234", "+8825551234"),
            ("%2b8825551234", "+8825551234"),
            ("%2B1 (242) 555-0100", "+12425550100"),
            ("011882555123", "+882555123"),
            ("9011882555123", "+882555123"),
            ("18095550100", "+18095550100"),
            ("918095550100", "+18095550100"),
            ("1.809.555.0100", "+18095550100"),
            ("9+447700900123", "+447700900123"),
            // Extensions, local numbers, names.
            ("101", "internal 101"),
            ("9101", "internal 9101"),
            ("5550100", "internal 5550100"),
            ("1001", "internal 1001"),
            ("alice", "internal alice"),
            ("+", "internal +"),
            ("011", "internal 011"),
            ("+88255x1234", "internal +88255x1234"),
        ] {
            assert_eq!(e164(&p, dialled), want, "{dialled}");
        }
        assert!(matches!(
            p.normalise("18095550100"),
            Dialled::E164 {
                how: How::National,
                ..
            }
        ));
    }

    #[test]
    fn europe_dial_plan() {
        let p = europe();
        assert_eq!(e164(&p, "00355691234567"), "+355691234567", "Albania");
        assert_eq!(e164(&p, "030123456"), "+4930123456", "national");
        assert_eq!(e164(&p, "+4930123456"), "+4930123456");
        assert_eq!(e164(&p, "2000"), "internal 2000");
    }
}
