//! The call rules into the kernel's maps: `CALL_RULES` (the compiled table, with each
//! after-hours entry set for the current side of the schedule), `TRUNKS`, and `CALL_REPLY`.
//! New entries go in before stale ones leave, so a reload never opens a gap.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use aya::maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use ipnet::IpNet;
use sip_filter_common::{
    CALL_REPLY_LEN, CALL_SYMBOLS, CallDigits, CallLimits, CallReply, CallRule, MAX_CALL_RULES,
    REPLY_LIMIT, REPLY_RULE, call_stat_index, map,
};
use tracing::warn;

use super::rules::{Action, Table};
use crate::{
    addr::{lpm_to_net, net_to_lpm},
    config::Calls,
    maps::Maps,
    state::State,
};

/// The status line a blocked INVITE gets, cut or padded with spaces to the request line's
/// length: the words that say why come first, so a short request line keeps them.
pub const REPLY: &str = "SIP/2.0 403 Destination blocked (sip-filter: toll-fraud rule)";
/// The status line an INVITE refused by the per-extension limits gets.
pub const REPLY_HELD: &str = "SIP/2.0 403 Call limit reached (sip-filter: extension held)";

fn reply(text: &str) -> CallReply {
    let mut r = [b' '; CALL_REPLY_LEN];
    r[..text.len()].copy_from_slice(text.as_bytes());
    r
}

/// The limits as the kernel applies them (all zero: none).
pub fn limits(calls: Option<&Calls>) -> CallLimits {
    let Some(c) = calls else {
        return CallLimits::default();
    };
    let (same_number, within) = c.max_same_number.unwrap_or_default();
    CallLimits {
        per_minute: c.max_calls_per_minute,
        same_number,
        same_window_ns: within.as_nanos() as u64,
        block_for_ns: c.block_for.as_nanos() as u64,
    }
}

/// The table's entries as the kernel holds them, blocked or not at this side of the schedule.
pub fn entries(calls: &Calls, business_hours: bool) -> BTreeMap<Vec<u8>, CallRule> {
    let table = Table::compile(&calls.plan, &calls.rules);
    let index: BTreeMap<&str, u32> = calls
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.prefix.as_str(), i as u32))
        .collect();
    let mut out = BTreeMap::new();
    for (form, e) in &table.forms {
        if form.len() > CALL_SYMBOLS {
            warn!(form = %form, "a dialable form longer than {CALL_SYMBOLS} symbols is left out");
            continue;
        }
        let rule = e
            .rule
            .as_deref()
            .and_then(|p| calls.rules.iter().find(|r| r.prefix == p));
        let blocked = match rule.map(|r| r.action) {
            Some(Action::Block) => true,
            Some(Action::AfterHoursBlock) => !business_hours,
            _ => false,
        };
        out.insert(
            form.as_bytes().to_vec(),
            CallRule {
                blocked: u8::from(blocked),
                min_digits: e.min_digits,
                international: u8::from(e.international),
                _pad: 0,
                rule: e.rule.as_deref().map_or(u32::MAX, |p| index[p]),
            },
        );
    }
    out
}

fn key(form: &[u8]) -> Key<CallDigits> {
    let mut d = [0u8; CALL_SYMBOLS];
    d[..form.len()].copy_from_slice(form);
    Key::new(8 * form.len() as u32, d)
}

/// Writes the call rules (none: `calls` is `None`); returns whether any are in force.
pub fn apply(dp: &mut impl Maps, calls: Option<&Calls>, business_hours: bool) -> Result<bool> {
    {
        let mut r: Array<&mut MapData, CallReply> =
            Array::try_from(dp.map_mut(map::CALL_REPLY.name)?)?;
        r.set(REPLY_RULE, reply(REPLY), 0)?;
        r.set(REPLY_LIMIT, reply(REPLY_HELD), 0)?;
    }
    {
        let mut l: Array<&mut MapData, CallLimits> =
            Array::try_from(dp.map_mut(map::CALL_LIMITS.name)?)?;
        l.set(0, limits(calls), 0)?;
    }
    let wanted = calls
        .map(|c| entries(c, business_hours))
        .unwrap_or_default();
    let mut rules: LpmTrie<&mut MapData, CallDigits, CallRule> =
        LpmTrie::try_from(dp.map_mut(map::CALL_RULES.name)?)?;
    let existing: Vec<(u32, CallDigits)> = rules
        .keys()
        .filter_map(Result::ok)
        .map(|k| (k.prefix_len(), k.data()))
        .collect();
    for (form, v) in &wanted {
        rules
            .insert(&key(form), v, 0)
            .context("writing the call rules (CALL_RULES full?)")?;
    }
    for (len, data) in existing {
        let form = data[..(len / 8) as usize].to_vec();
        if !wanted.contains_key(&form) {
            let _ = rules.remove(&Key::new(len, data));
        }
    }

    let trunks: BTreeSet<IpNet> = calls
        .map(|c| c.trunks.iter().map(|n| n.trunc()).collect())
        .unwrap_or_default();
    let mut t: LpmTrie<&mut MapData, [u8; 16], u32> =
        LpmTrie::try_from(dp.map_mut(map::TRUNKS.name)?)?;
    let old: Vec<(u32, [u8; 16])> = t
        .keys()
        .filter_map(Result::ok)
        .map(|k| (k.prefix_len(), k.data()))
        .collect();
    for net in &trunks {
        let (len, k) = net_to_lpm(*net);
        t.insert(&Key::new(len, k), 1, 0)?;
    }
    for (len, k) in old {
        if !trunks.contains(&lpm_to_net(len, k)) {
            let _ = t.remove(&Key::new(len, k));
        }
    }
    Ok(!wanted.is_empty())
}

/// Names the rules in force in the state file, index by index, as the kernel counts them
/// (`CALL_STATS`); when the list changed, the counters, which counted for the old list's
/// indices, start again from zero.
pub fn name_rules(dp: &mut impl Maps, state: &mut State, calls: Option<&Calls>) -> Result<()> {
    let names: Vec<String> = calls
        .map(|c| c.rules.iter().map(|r| r.describe()).collect())
        .unwrap_or_default();
    if !state.set_call_rules(&names)? {
        return Ok(());
    }
    let mut stats: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(dp.map_mut(map::CALL_STATS.name)?)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    for i in 0..map::CALL_STATS.max_entries {
        stats.set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
    }
    Ok(())
}

/// Calls each rule decided and blocked, summed over the CPUs: `(decided, blocked)` for the
/// first `n` rules (the kernel counts the first `MAX_CALL_RULES`).
pub fn rule_stats(dp: &mut impl Maps, n: usize) -> Result<Vec<(u64, u64)>> {
    let stats: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(dp.map_mut(map::CALL_STATS.name)?)?;
    let sum = |i: u32| -> Result<u64> { Ok(stats.get(&i, 0)?.iter().sum()) };
    (0..n.min(MAX_CALL_RULES as usize) as u32)
        .map(|r| {
            Ok((
                sum(call_stat_index(r, false))?,
                sum(call_stat_index(r, true))?,
            ))
        })
        .collect()
}
