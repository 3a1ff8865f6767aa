//! Destination rules and what they compile to.
//!
//! Rules are E.164 prefixes in three lists; the longest prefix that matches decides:
//! `block` always blocks, `allow` never blocks, `after_hours_block` blocks outside business
//! hours. The default high-risk list joins `block` unless the configuration names the same
//! prefix itself.
//!
//! The kernel will not normalise: it looks the cleaned dialled string up in a table of every
//! dialable form of every rule (`+P`, `international_prefix P`, the national form of a rule
//! under the PBX's own country code, each with and without the outside line). [`Table`] is
//! that table, and `calls check` decides with it, so the preview and the dataplane agree by
//! construction; its tests check it against [`RuleSet::decide`] on normalised numbers.
use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::dialplan::{self, DialPlan, Dialled};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Block,
    Allow,
    AfterHoursBlock,
}

impl Action {
    pub fn key(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Allow => "allow",
            Action::AfterHoursBlock => "after_hours_block",
        }
    }
}

/// One rule: the digits after `+` (empty for `"+"`, every international number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub action: Action,
    /// Where it comes from: `None` for the configuration, else the default list's source.
    pub source: Option<&'static str>,
}

impl Rule {
    pub fn describe(&self) -> String {
        match self.source {
            None => format!("{} \"+{}\"", self.action.key(), self.prefix),
            Some(src) => format!("default_block \"+{}\" ({src})", self.prefix),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// By prefix: one rule per prefix.
    rules: BTreeMap<String, Rule>,
}

/// What a call to a number gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub blocked: bool,
    /// The rule that decided (`None`: no rule matched, or not an E.164 number).
    pub rule: Option<Rule>,
}

/// A prefix as written (`"+882"`, `"+"`): its digits.
pub fn parse_prefix(s: &str) -> Result<String> {
    let Some(d) = s.trim().strip_prefix('+') else {
        bail!(
            "{s:?} is not an E.164 prefix: write it with \"+\" and the country code, e.g. \"+882\""
        );
    };
    if !d.bytes().all(|b| b.is_ascii_digit()) || d.len() > 15 {
        bail!("{s:?} is not an E.164 prefix: \"+\" then at most 15 digits, e.g. \"+1242\"");
    }
    Ok(d.to_string())
}

impl RuleSet {
    /// The configured lists (prefix digits), with the default list when `default_block`.
    /// A prefix in two of the lists is an error naming both.
    pub fn new(
        block: &[String],
        allow: &[String],
        after_hours_block: &[String],
        default_block: bool,
    ) -> Result<Self> {
        let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
        for (list, action) in [
            (block, Action::Block),
            (allow, Action::Allow),
            (after_hours_block, Action::AfterHoursBlock),
        ] {
            for p in list {
                if let Some(other) = rules.get(p) {
                    bail!(
                        "\"+{p}\" is in both {} and {}: keep it in one",
                        other.action.key(),
                        action.key()
                    );
                }
                rules.insert(
                    p.clone(),
                    Rule {
                        prefix: p.clone(),
                        action,
                        source: None,
                    },
                );
            }
        }
        if default_block {
            for (p, src) in super::high_risk::DEFAULT_BLOCK {
                let d = parse_prefix(p).expect("the default list is well formed");
                rules.entry(d.clone()).or_insert(Rule {
                    prefix: d,
                    action: Action::Block,
                    source: Some(src),
                });
            }
        }
        Ok(Self { rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// The longest rule that is a prefix of `e164` (digits after `+`).
    pub fn longest(&self, e164: &str) -> Option<&Rule> {
        (0..=e164.len())
            .rev()
            .find_map(|n| self.rules.get(&e164[..n]))
    }

    /// The verdict for a normalised number, in or out of business hours.
    pub fn decide(&self, d: &Dialled, business_hours: bool) -> Verdict {
        let Dialled::E164 { digits, .. } = d else {
            return Verdict {
                blocked: false,
                rule: None,
            };
        };
        verdict(self.longest(digits).cloned(), business_hours)
    }
}

fn verdict(rule: Option<Rule>, business_hours: bool) -> Verdict {
    let blocked = match rule.as_ref().map(|r| r.action) {
        Some(Action::Block) => true,
        Some(Action::AfterHoursBlock) => !business_hours,
        Some(Action::Allow) | None => false,
    };
    Verdict { blocked, rule }
}

/// One entry of the compiled table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The rule's prefix (`None`: a guard that keeps an international number from falling back
    /// to a national form).
    pub rule: Option<String>,
    /// Fewer digits than this in the cleaned string: an extension, not matched.
    pub min_digits: u8,
    /// Numbers of this form are international (not the PBX's own country): the calls the
    /// per-extension limits count.
    pub international: bool,
}

/// Every dialable form of every rule: cleaned dialled string (`+` and digits) -> entry.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub forms: BTreeMap<String, Entry>,
    rules: RuleSet,
}

impl Table {
    pub fn compile(plan: &DialPlan, rules: &RuleSet) -> Self {
        let mut forms: BTreeMap<String, Entry> = BTreeMap::new();
        let outside = plan.outside_line.as_str();
        let lines: Vec<&str> = if outside.is_empty() {
            vec![""]
        } else {
            vec!["", outside]
        };
        let cc = plan.country_code.as_str();
        let mut put = |form: String, rule: Option<&str>, line: &str, international: bool| {
            let entry = Entry {
                rule: rule.map(str::to_string),
                min_digits: (dialplan::MIN_DIGITS + line.len()) as u8,
                international,
            };
            match forms.get(&form) {
                // The more specific rule keeps a shared form (a guard never displaces a rule).
                Some(old) if old.rule.as_ref().map(String::len) >= rule.map(str::len) => {}
                _ => {
                    forms.insert(form, entry);
                }
            }
        };
        // The rule a number under `+<digits>` falls to when no rule is that specific: what
        // `+<country code>` is given below, so that it is told apart as domestic.
        let covering = |digits: &str| {
            rules
                .iter()
                .filter(|r| digits.starts_with(r.prefix.as_str()))
                .max_by_key(|r| r.prefix.len())
                .map(|r| r.prefix.clone())
        };
        let home = covering(cc);
        for line in &lines {
            // Guards: what starts like an international number is one.
            put(format!("{line}+"), None, line, true);
            if !plan.international_prefix.is_empty() {
                put(
                    format!("{line}{}", plan.international_prefix),
                    None,
                    line,
                    true,
                );
            }
            // The own country dialled as an international number is domestic: its own forms,
            // with whatever rule covers it (so no verdict changes).
            put(format!("{line}+{cc}"), home.as_deref(), line, false);
            if !plan.international_prefix.is_empty() {
                put(
                    format!("{line}{}{cc}", plan.international_prefix),
                    home.as_deref(),
                    line,
                    false,
                );
            }
            for r in rules.iter() {
                let p = r.prefix.as_str();
                // Abroad, or on the default high-risk list (the Caribbean area codes under +1
                // bill as international).
                let abroad = !p.starts_with(cc) || r.source.is_some();
                put(format!("{line}+{p}"), Some(p), line, abroad);
                if !plan.international_prefix.is_empty() {
                    put(
                        format!("{line}{}{p}", plan.international_prefix),
                        Some(p),
                        line,
                        abroad,
                    );
                }
                if !plan.national_prefix.is_empty() {
                    if let Some(rest) = p.strip_prefix(cc) {
                        put(
                            format!("{line}{}{rest}", plan.national_prefix),
                            Some(p),
                            line,
                            false,
                        );
                    } else if cc.starts_with(p) {
                        // Shorter than the country code ("+", "+1" under "1"): every national
                        // number.
                        put(
                            format!("{line}{}", plan.national_prefix),
                            Some(p),
                            line,
                            false,
                        );
                    }
                }
            }
        }
        Self {
            forms,
            rules: rules.clone(),
        }
    }

    /// The entry a dialled user part meets, looked up the way the kernel will: clean it, take
    /// the longest form that is a prefix, check its digit count.
    pub fn lookup_entry(&self, user: &str) -> Option<&Entry> {
        let cleaned = dialplan::clean(user);
        if cleaned
            .bytes()
            .skip(1)
            .any(|b| !b.is_ascii_digit() && b != b'+')
            || cleaned.is_empty()
        {
            return None;
        }
        let digits = cleaned.bytes().filter(u8::is_ascii_digit).count();
        let e = (0..=cleaned.len())
            .rev()
            .find_map(|n| self.forms.get(&cleaned[..n]))?;
        (digits >= e.min_digits as usize).then_some(e)
    }

    /// The rule a dialled user part meets (see `lookup_entry`).
    pub fn lookup(&self, user: &str) -> Option<&Rule> {
        let e = self.lookup_entry(user)?;
        // Only digits may follow a form (a second "+" is no number).
        self.rules.rules.get(e.rule.as_ref()?)
    }

    pub fn decide(&self, user: &str, business_hours: bool) -> Verdict {
        verdict(self.lookup(user).cloned(), business_hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &[&str]) -> Vec<String> {
        v.iter().map(|p| parse_prefix(p).unwrap()).collect()
    }

    fn example() -> RuleSet {
        RuleSet::new(&d(&["+882", "+883"]), &d(&["+1"]), &d(&["+"]), true).unwrap()
    }

    #[test]
    fn longest_prefix_decides() {
        let r = example();
        let plan = DialPlan {
            outside_line: "9".into(),
            ..DialPlan::default()
        };
        let decide = |n: &str, bh: bool| r.decide(&plan.normalise(n), bh);
        assert!(decide("+8825551234", true).blocked, "block");
        assert!(decide("+447700900123", false).blocked, "after hours");
        assert!(!decide("+447700900123", true).blocked, "business hours");
        assert!(!decide("+12125550100", false).blocked, "+1 allowed");
        let v = decide("18095550100", true);
        assert!(v.blocked, "the Caribbean look-alike beats +1");
        assert_eq!(v.rule.unwrap().prefix, "1809");
        assert!(!decide("101", false).blocked, "extension");
        // The configuration overrides the default list for the same prefix.
        let r = RuleSet::new(&[], &d(&["+1809"]), &[], true).unwrap();
        assert!(!r.decide(&plan.normalise("18095550100"), true).blocked);
        assert!(r.len() > 30);
    }

    #[test]
    fn bad_prefixes_and_conflicts() {
        assert!(
            parse_prefix("882")
                .unwrap_err()
                .to_string()
                .contains("with \"+\"")
        );
        assert!(parse_prefix("+88x").is_err());
        assert_eq!(parse_prefix("+").unwrap(), "");
        let e = RuleSet::new(&d(&["+44"]), &d(&["+44"]), &[], false).unwrap_err();
        assert!(e.to_string().contains("both block and allow"), "{e}");
    }

    /// Numbers as phones dial them, in every form the dial plan allows.
    fn dialled_forms(plan: &DialPlan, seed: u64) -> Vec<String> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ccs = [
            "1", "1809", "1242", "44", "49", "53", "882", "883", "355", "252", "7", "33",
        ];
        let mut out = Vec::new();
        for _ in 0..4000 {
            let cc = ccs[(next() % ccs.len() as u64) as usize];
            let len = (next() % 12) as usize;
            let rest: String = (0..len)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let line = if next() % 3 == 0 {
                plan.outside_line.as_str()
            } else {
                ""
            };
            let n = match next() % 6 {
                0 => format!("{line}+{cc}{rest}"),
                1 => format!("{line}%2B{cc}{rest}"),
                2 => format!("{line}{}{cc}{rest}", plan.international_prefix),
                3 => match cc.strip_prefix(plan.country_code.as_str()) {
                    Some(national) => format!("{line}{}{national}{rest}", plan.national_prefix),
                    None => format!("{line}{rest}"),
                },
                4 => format!("{line}{rest}"),
                _ => format!("{line}+{cc}-{rest}"),
            };
            out.push(n);
        }
        out
    }

    #[test]
    fn the_table_decides_as_the_normalised_rules_do() {
        let plans = [
            DialPlan {
                outside_line: "9".into(),
                ..DialPlan::default()
            },
            DialPlan::default(),
            // (An outside line "0" under national "0" and international "00" would make "0030"
            // ambiguous; a PBX with such a plan requires the outside line, see dialplan.)
            DialPlan {
                country_code: "49".into(),
                international_prefix: "00".into(),
                national_prefix: "0".into(),
                outside_line: String::new(),
            },
            DialPlan {
                country_code: "44".into(),
                international_prefix: "00".into(),
                national_prefix: "0".into(),
                outside_line: String::new(),
            },
        ];
        let sets = [
            example(),
            RuleSet::new(&d(&["+44", "+4930"]), &d(&["+49"]), &[], false).unwrap(),
            RuleSet::new(&[], &[], &d(&["+"]), false).unwrap(),
            RuleSet::new(&d(&["+1"]), &d(&["+1212"]), &d(&["+44"]), true).unwrap(),
        ];
        let mut checked = 0;
        for (i, plan) in plans.iter().enumerate() {
            for rules in &sets {
                let table = Table::compile(plan, rules);
                for n in dialled_forms(plan, 0x9e37_79b9 + i as u64) {
                    for bh in [false, true] {
                        let want = rules.decide(&plan.normalise(&n), bh);
                        let got = table.decide(&n, bh);
                        assert_eq!(
                            (got.blocked, got.rule.map(|r| r.prefix)),
                            (want.blocked, want.rule.map(|r| r.prefix)),
                            "{n:?} under {plan:?}: normalised {}",
                            plan.normalise(&n)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }
}
