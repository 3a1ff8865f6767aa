//! Scanner signatures: User-Agents that ban their source at the first request. Compiled into
//! `SCANNERS` (an LPM trie over the folded User-Agent: a prefix matches what starts with it, an
//! exact signature's key holds the value's end as well).
use anyhow::{Context as _, Result};
use aya::maps::{LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use sip_filter_common::{MAX_SIGNATURES, UA_LEN, UserAgent, map, ua_fold};

use crate::maps::Maps;

/// The default list: the User-Agents of the SIP attack tools and of the scanners seen on the
/// Internet. Matched case-insensitively as prefixes; `=` means the whole value.
pub const DEFAULT: &[&str] = &[
    // SIPVicious (svmap, svwar, svcrack) and its many forks: their default User-Agent.
    "friendly-scanner",
    // SIPVicious' newer releases, and tools built on it, name themselves.
    "sipvicious",
    // sipcli, a command-line SIP client used for toll-fraud test calls.
    "sipcli",
    // The sundayddr worm's REGISTER/INVITE scans.
    "sundayddr",
    // iWar, a war dialer with a SIP mode.
    "iWar",
    // sip-scan / SIPScan, the SIPScan enumeration tools.
    "sip-scan",
    "SIPScan",
    // The VaxVoIP SDK's default agents, the stack of many brute-force tools.
    "VaxSIPUserAgent",
    "VaxIPUserAgent",
    // pplsip, a scanner seen in honeypot logs (APIBAN, VoIPBL).
    "pplsip",
    // SIP Army Knife, a SIP fuzzer.
    "siparmyknife",
    // SiVuS, the SIP vulnerability scanner.
    "sivus",
    // Nsauditor's network security auditor.
    "Nsauditor",
    // Nmap's SIP scripts (sip-methods, sip-enum-users, sip-brute).
    "Nmap NSE",
    // SimpleSIP, and "SIP Call", agents of call-generating fraud tools.
    "SimpleSIP",
    "SIP Call",
    // Random-looking agents of brute-force campaigns, seen in honeypot logs.
    "zxcvfdf11",
    "fdgddfg546df4g8d5f",
    // smap, the SIP scanner: exact, as "smap" starts other words.
    "=smap",
];

/// One signature: the User-Agent's start (or, `exact`, all of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub text: String,
    pub exact: bool,
}

impl Signature {
    /// Parses one list entry (`=name` for an exact one).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (exact, text) = match s.strip_prefix('=') {
            Some(t) => (true, t),
            None => (false, s),
        };
        if text.is_empty() {
            return Err(format!("{s:?} is empty: give the start of a User-Agent"));
        }
        if text.contains(['\r', '\n', '\0']) {
            return Err(format!("{s:?} holds a line break or a NUL"));
        }
        // An exact one's key holds its end too.
        let room = if exact { UA_LEN - 1 } else { UA_LEN };
        if text.len() > room {
            return Err(format!(
                "{s:?} is longer than the {room} bytes of a User-Agent the kernel compares"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            exact,
        })
    }

    /// As the operator wrote it.
    pub fn describe(&self) -> String {
        if self.exact {
            format!("={}", self.text)
        } else {
            self.text.clone()
        }
    }

    /// Its `SCANNERS` key.
    pub fn key(&self) -> Key<UserAgent> {
        let mut d = [0u8; UA_LEN];
        for (o, b) in d.iter_mut().zip(self.text.bytes()) {
            *o = ua_fold(b);
        }
        let n = self.text.len() + usize::from(self.exact);
        Key::new(8 * n as u32, d)
    }

    /// Do the two compare the same User-Agents (one key)?
    pub fn same_key(&self, other: &Signature) -> bool {
        let (a, b) = (self.key(), other.key());
        a.prefix_len() == b.prefix_len() && a.data() == b.data()
    }

    /// The signature a `SCANNERS` key stands for (folded: as the kernel compares it).
    fn from_key(len: u32, d: &UserAgent) -> String {
        let n = (len / 8) as usize;
        let text = &d[..n.min(UA_LEN)];
        match text.split_last() {
            Some((0, rest)) => format!("={}", String::from_utf8_lossy(rest)),
            _ => String::from_utf8_lossy(text).into_owned(),
        }
    }
}

/// The default list, parsed.
pub fn defaults() -> Vec<Signature> {
    DEFAULT
        .iter()
        .map(|s| Signature::parse(s).expect("the default list is valid"))
        .collect()
}

/// Writes the signatures into `SCANNERS` (new entries before stale ones leave); when the list
/// changed, the per-signature counters, which counted for the old indices, start from zero.
/// Whether any are in force.
pub fn apply(dp: &mut impl Maps, list: &[Signature]) -> Result<bool> {
    let changed = {
        let mut m: LpmTrie<&mut MapData, UserAgent, u32> =
            LpmTrie::try_from(dp.map_mut(map::SCANNERS.name)?)?;
        let old: Vec<(u32, UserAgent, u32)> = m
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.prefix_len(), k.data(), v))
            .collect();
        let wanted: Vec<(Key<UserAgent>, u32)> = list
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key(), i as u32))
            .collect();
        let same = old.len() == wanted.len()
            && wanted.iter().all(|(k, i)| {
                old.iter()
                    .any(|(l, d, v)| *l == k.prefix_len() && *d == k.data() && v == i)
            });
        for (k, i) in &wanted {
            m.insert(k, i, 0)
                .context("writing the scanner signatures (SCANNERS full?)")?;
        }
        for (len, d, _) in old {
            if !wanted
                .iter()
                .any(|(k, _)| k.prefix_len() == len && k.data() == d)
            {
                let _ = m.remove(&Key::new(len, d));
            }
        }
        !same
    };
    if changed {
        let mut stats: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(dp.map_mut(map::SCANNER_STATS.name)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for i in 0..map::SCANNER_STATS.max_entries {
            stats.set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
    }
    Ok(!list.is_empty())
}

/// Each signature in force (as the kernel compares it: folded) and the requests it caught,
/// in list order.
pub fn stats(dp: &mut impl Maps) -> Result<Vec<(String, u64)>> {
    let sigs: Vec<(u32, String)> = {
        let m: LpmTrie<&mut MapData, UserAgent, u32> =
            LpmTrie::try_from(dp.map_mut(map::SCANNERS.name)?)?;
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, i)| (i, Signature::from_key(k.prefix_len(), &k.data())))
            .collect()
    };
    let stats: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(dp.map_mut(map::SCANNER_STATS.name)?)?;
    let mut out: Vec<(u32, String, u64)> = sigs
        .into_iter()
        .map(|(i, s)| {
            let n = if i < MAX_SIGNATURES {
                stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
            } else {
                0
            };
            (i, s, n)
        })
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, s, n)| (s, n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_and_exact_ones_hold_the_end() {
        let k = Signature::parse("Friendly-Scanner").unwrap().key();
        assert_eq!(k.prefix_len(), 16 * 8);
        assert_eq!(&k.data()[..16], b"friendly-scanner");
        let e = Signature::parse("=smap").unwrap().key();
        assert_eq!(e.prefix_len(), 5 * 8);
        assert_eq!(&e.data()[..5], b"smap\0");
        assert_eq!(Signature::from_key(5 * 8, &e.data()), "=smap");
        assert_eq!(Signature::from_key(16 * 8, &k.data()), "friendly-scanner");
    }

    #[test]
    fn bad_signatures_are_refused() {
        assert!(Signature::parse("").is_err());
        assert!(Signature::parse("=").is_err());
        assert!(Signature::parse(&"x".repeat(33)).is_err());
        assert!(Signature::parse(&format!("={}", "x".repeat(32))).is_err());
        assert!(Signature::parse(&"x".repeat(32)).is_ok());
        assert_eq!(defaults().len(), DEFAULT.len());
    }
}
