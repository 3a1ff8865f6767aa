//! The filter's memory on disk: every ban with its reason, origin, note, failure count and
//! wall-clock times, and so each source's offence history, in an SQLite database (WAL mode)
//! under the state directory, one file per interface (`/var/lib/sip-filter/<iface>.db`).
//!
//! The kernel's maps are what is enforced; this file is what outlives them. bpffs is empty
//! after a reboot and a map-layout upgrade starts on new maps: the daemon then puts every ban
//! still in force back from here before it attaches (see `ledger`). Only the daemon writes it;
//! the CLI reads it (`ban show`, the offence numbers of `ban list`).
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use serde::Serialize;

use crate::clock;

/// Default state directory (`[state] dir`).
pub const DEFAULT_DIR: &str = "/var/lib/sip-filter";

/// The schema; `user_version` says which one a file has.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    id         INTEGER PRIMARY KEY,
    -- Address, IPv6 prefix or CIDR, as `ban list` shows it.
    target     TEXT NOT NULL,
    -- BanReason::as_str.
    reason     TEXT NOT NULL,
    -- Who issued it: see `origin`.
    origin     TEXT NOT NULL,
    note       TEXT,
    failures   INTEGER NOT NULL,
    -- This ban's number among the source's offences remembered (1 = first).
    offence    INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    -- NULL: permanent.
    expires_ms INTEGER,
    -- The boot and boot-clock instant of the ban's `created_ns` in the maps: with the target,
    -- what identifies this ban in BANS/BAN_NETS.
    boot_id    TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    -- NULL while in force (or until the daemon notices it ended).
    lifted_ms  INTEGER,
    -- See `lifted`.
    lifted_by  TEXT
);
CREATE INDEX IF NOT EXISTS bans_by_target ON bans (target, created_ms);
CREATE INDEX IF NOT EXISTS bans_open ON bans (lifted_ms);
-- Decisions held for shared blocklists (`[crowdsec]`, `[apiban]`): a reboot puts them back
-- before the first packet, and `ban list` tells where each came from.
CREATE TABLE IF NOT EXISTS decisions (
    -- Which blocklist: `origin::CROWDSEC`, `origin::APIBAN`.
    source     TEXT NOT NULL,
    -- The decision's id at its source.
    id         TEXT NOT NULL,
    -- As `ban list` names it.
    target     TEXT NOT NULL,
    -- Who made it there (CrowdSec: `cscli`, `crowdsec`, `CAPI`, `lists:...`) and why.
    origin     TEXT NOT NULL,
    scenario   TEXT NOT NULL,
    -- NULL: no end.
    expires_ms INTEGER,
    PRIMARY KEY (source, id)
);
CREATE INDEX IF NOT EXISTS decisions_by_target ON decisions (target);
-- Where an incremental feed (`[apiban]`) goes on after a restart: the id of the next page,
-- and when its last full fetch started.
CREATE TABLE IF NOT EXISTS cursors (
    source  TEXT PRIMARY KEY,
    cursor  TEXT NOT NULL,
    full_ms INTEGER NOT NULL
);
-- What each index of the kernel's per-rule call counters (CALL_STATS) stands for: the rule
-- list in force, as `calls check` names each rule.
CREATE TABLE IF NOT EXISTS call_rules (
    idx  INTEGER PRIMARY KEY,
    rule TEXT NOT NULL
);
";

/// `origin` values.
pub mod origin {
    /// Issued by the kernel at a threshold.
    pub const KERNEL: &str = "sip-filter";
    /// `sip-filter ban add`.
    pub const OPERATOR: &str = "operator";
    /// A CrowdSec LAPI decision (`[crowdsec]`).
    pub const CROWDSEC: &str = "crowdsec";
    /// An APIBAN entry (`[apiban]`).
    pub const APIBAN: &str = "apiban";
}

/// Where an incremental feed goes on: the id to ask from, and the start of its last full fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub id: String,
    pub full_ms: i64,
}

/// A shared blocklist's decision as the state file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionRow {
    pub source: String,
    pub id: String,
    pub target: String,
    pub origin: String,
    pub scenario: String,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_ms: Option<i64>,
}

/// `lifted_by` values.
pub mod lifted {
    pub const EXPIRED: &str = "expired";
    /// `ban del` / `ban flush`.
    pub const OPERATOR: &str = "operator";
    /// A new ban of the same target took its place.
    pub const REPLACED: &str = "replaced";
    /// `sip-filter detach` forgot every ban (the history stays, for repeat offenders).
    pub const DETACHED: &str = "detached";
}

/// A ban as the state file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    #[serde(skip)]
    pub id: i64,
    pub target: String,
    pub reason: String,
    pub origin: String,
    pub note: Option<String>,
    pub failures: u32,
    pub offence: u32,
    #[serde(serialize_with = "rfc3339")]
    pub created_ms: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_ms: Option<i64>,
    #[serde(skip)]
    pub boot_id: String,
    #[serde(skip)]
    pub created_ns: u64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub lifted_ms: Option<i64>,
    pub lifted_by: Option<String>,
}

pub fn format_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(clock::from_unix_ms(ms)).to_string()
}

fn rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms))
}

fn rfc3339_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_ms(*ms)),
        None => s.serialize_none(),
    }
}

/// A ban to record.
pub struct NewBan<'a> {
    pub target: &'a str,
    pub reason: &'a str,
    pub origin: &'a str,
    pub note: Option<&'a str>,
    pub failures: u32,
    pub offence: u32,
    pub created: SystemTime,
    pub expires: Option<SystemTime>,
    pub created_ns: u64,
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// The state file of `iface` under `dir`.
pub fn path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.db"))
}

const COLUMNS: &str = "id, target, reason, origin, note, failures, offence, created_ms, \
                       expires_ms, boot_id, created_ns, lifted_ms, lifted_by";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        target: r.get(1)?,
        reason: r.get(2)?,
        origin: r.get(3)?,
        note: r.get(4)?,
        failures: r.get(5)?,
        offence: r.get(6)?,
        created_ms: r.get(7)?,
        expires_ms: r.get(8)?,
        boot_id: r.get(9)?,
        created_ns: r.get::<_, i64>(10)? as u64,
        lifted_ms: r.get(11)?,
        lifted_by: r.get(12)?,
    })
}

impl State {
    /// Opens (creating) the state file for writing, and checks it is sound.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)?;
        // A second writer (a CLI read, say) waits instead of failing at once.
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the daemon, and a crash mid-write loses at most the last
        // transaction. NORMAL sync is durable against a process crash, the common case.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(mode == "wal", "the state file refused WAL mode ({mode})");
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        anyhow::ensure!(check == "ok", "integrity check failed: {check}");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "written by a newer sip-filter (schema {version}, this one knows {SCHEMA_VERSION})"
        );
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens the state file; a damaged or unreadable one is moved aside (returned) and a new one
    /// started, so that the filter always starts.
    pub fn open_or_set_aside(path: &Path) -> Result<(Self, Option<(PathBuf, anyhow::Error)>)> {
        match Self::open(path) {
            Ok(s) => Ok((s, None)),
            Err(e) => {
                let aside = PathBuf::from(format!(
                    "{}.damaged-{}",
                    path.display(),
                    clock::unix_ms(SystemTime::now()) / 1000
                ));
                if path.exists() {
                    std::fs::rename(path, &aside).with_context(|| {
                        format!(
                            "the state file {} is damaged ({e:#}) and could not be moved aside",
                            path.display()
                        )
                    })?;
                }
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", path.display()));
                    if side.exists() {
                        let _ = std::fs::rename(
                            &side,
                            PathBuf::from(format!("{}{suffix}", aside.display())),
                        );
                    }
                }
                let s = Self::open(path)
                    .with_context(|| format!("starting a new state file {}", path.display()))?;
                Ok((s, Some((aside, e))))
            }
        }
    }

    /// Opens an existing state file for reading (the CLI).
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening the state file {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn insert(&self, b: &NewBan<'_>, boot_id: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO bans (target, reason, origin, note, failures, offence, created_ms, \
             expires_ms, boot_id, created_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                b.target,
                b.reason,
                b.origin,
                b.note,
                b.failures,
                b.offence,
                clock::unix_ms(b.created),
                b.expires.map(clock::unix_ms),
                boot_id,
                b.created_ns as i64,
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The ban `id` ended at `at`.
    pub fn lift(&self, id: i64, at: SystemTime, by: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE bans SET lifted_ms = ?2, lifted_by = ?3 WHERE id = ?1",
            params![id, clock::unix_ms(at), by],
        )?;
        Ok(())
    }

    /// The ban `id` now ends at `expires` (a repeat offender's longer ban).
    pub fn set_expiry(&self, id: i64, expires: Option<SystemTime>) -> Result<()> {
        self.conn.execute(
            "UPDATE bans SET expires_ms = ?2 WHERE id = ?1",
            params![id, expires.map(clock::unix_ms)],
        )?;
        Ok(())
    }

    /// The ban `id` was put back into the maps of boot `boot_id` at `created_ns`.
    pub fn rebind(&self, id: i64, boot_id: &str, created_ns: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE bans SET boot_id = ?2, created_ns = ?3 WHERE id = ?1",
            params![id, boot_id, created_ns as i64],
        )?;
        Ok(())
    }

    /// Closes every ban not lifted yet; returns how many.
    pub fn lift_all(&self, at: SystemTime, by: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE bans SET lifted_ms = ?1, lifted_by = ?2 WHERE lifted_ms IS NULL",
            params![clock::unix_ms(at), by],
        )?)
    }

    /// Bans not lifted yet (some may have expired since).
    pub fn open_bans(&self) -> Result<Vec<Row>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bans WHERE lifted_ms IS NULL ORDER BY id"
        ))?;
        let rows = st
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The ban of `target` not lifted yet, if any.
    pub fn open_ban(&self, target: &str) -> Result<Option<Row>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM bans WHERE lifted_ms IS NULL AND target = ?1 \
                     ORDER BY id DESC LIMIT 1"
                ),
                [target],
                row,
            )
            .optional()?)
    }

    /// Bans of `target` created at or after `since`: its offences remembered.
    pub fn offences(&self, target: &str, since: SystemTime) -> Result<u32> {
        Ok(self.conn.query_row(
            // A flood guard's drop is not an offence.
            "SELECT count(*) FROM bans WHERE target = ?1 AND created_ms >= ?2 AND reason != 'flood'",
            params![target, clock::unix_ms(since)],
            |r| r.get(0),
        )?)
    }

    /// Every ban of `target` remembered, oldest first.
    pub fn history(&self, target: &str) -> Result<Vec<Row>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bans WHERE target = ?1 ORDER BY created_ms, id"
        ))?;
        let rows = st
            .query_map([target], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The most recent bans, newest first (for `top`).
    pub fn recent(&self, n: usize) -> Result<Vec<Row>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bans ORDER BY created_ms DESC, id DESC LIMIT ?1"
        ))?;
        let rows = st
            .query_map([n as i64], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The call rules in force, by their index in the kernel's counters.
    pub fn call_rules(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT rule FROM call_rules ORDER BY idx")?;
        let rows = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Records the rule list in force; true when it differs from the one recorded (the
    /// kernel's per-rule counters then count for other rules and are cleared).
    pub fn set_call_rules(&mut self, rules: &[String]) -> Result<bool> {
        if self.call_rules()? == rules {
            return Ok(false);
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM call_rules", [])?;
        for (i, r) in rules.iter().enumerate() {
            tx.execute(
                "INSERT INTO call_rules (idx, rule) VALUES (?1, ?2)",
                rusqlite::params![i as i64, r],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Records decisions (replacing those of the same source and id), in one transaction.
    pub fn put_decisions(&mut self, rows: &[DecisionRow]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO decisions (source, id, target, origin, scenario, \
                 expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in rows {
                st.execute(params![
                    r.source,
                    r.id,
                    r.target,
                    r.origin,
                    r.scenario,
                    r.expires_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets decisions of `source` by id, in one transaction.
    pub fn delete_decisions(&mut self, source: &str, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st =
                tx.prepare_cached("DELETE FROM decisions WHERE source = ?1 AND id = ?2")?;
            for id in ids {
                st.execute(params![source, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every decision held of `source`.
    pub fn decisions(&self, source: &str) -> Result<Vec<DecisionRow>> {
        self.decisions_where("source = ?1", source)
    }

    /// The decisions held for one target (`ban list`'s name), of every source.
    pub fn decisions_for(&self, target: &str) -> Result<Vec<DecisionRow>> {
        self.decisions_where("target = ?1", target)
    }

    fn decisions_where(&self, cond: &str, arg: &str) -> Result<Vec<DecisionRow>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT source, id, target, origin, scenario, expires_ms FROM decisions WHERE {cond}"
        ))?;
        let rows = st.query_map([arg], |r| {
            Ok(DecisionRow {
                source: r.get(0)?,
                id: r.get(1)?,
                target: r.get(2)?,
                origin: r.get(3)?,
                scenario: r.get(4)?,
                expires_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The cursor recorded for `source`.
    pub fn cursor(&self, source: &str) -> Result<Option<Cursor>> {
        use rusqlite::OptionalExtension as _;
        Ok(self
            .conn
            .query_row(
                "SELECT cursor, full_ms FROM cursors WHERE source = ?1",
                [source],
                |r| {
                    Ok(Cursor {
                        id: r.get(0)?,
                        full_ms: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn set_cursor(&mut self, source: &str, c: &Cursor) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO cursors (source, cursor, full_ms) VALUES (?1, ?2, ?3)",
            params![source, c.id, c.full_ms],
        )?;
        Ok(())
    }

    /// Forgets ended bans created before `before` (older than `history_time`).
    pub fn prune(&self, before: SystemTime) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM bans WHERE lifted_ms IS NOT NULL AND created_ms < ?1",
            [clock::unix_ms(before)],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban<'a>(target: &'a str, created: SystemTime) -> NewBan<'a> {
        NewBan {
            target,
            reason: "auth-failures",
            origin: origin::KERNEL,
            note: None,
            failures: 5,
            offence: 1,
            created,
            expires: Some(created + Duration::from_secs(3600)),
            created_ns: 42,
        }
    }

    #[test]
    fn bans_are_recorded_lifted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "eth0");
        let s = State::open(&p).unwrap();
        let now = SystemTime::now();
        let a = s.insert(&ban("192.0.2.1", now), "boot").unwrap();
        s.insert(&ban("192.0.2.2", now), "boot").unwrap();
        assert_eq!(s.open_bans().unwrap().len(), 2);
        s.lift(a, now, lifted::OPERATOR).unwrap();
        let open = s.open_bans().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].target, "192.0.2.2");
        assert_eq!(
            s.offences("192.0.2.1", now - Duration::from_secs(60))
                .unwrap(),
            1
        );
        assert_eq!(
            s.offences("192.0.2.1", now + Duration::from_secs(60))
                .unwrap(),
            0
        );
        let h = s.history("192.0.2.1").unwrap();
        assert_eq!(h[0].lifted_by.as_deref(), Some("operator"));
        // Survives a reopen, and pruning forgets only ended bans.
        drop(s);
        let s = State::open(&p).unwrap();
        assert_eq!(s.prune(now + Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(s.history("192.0.2.1").unwrap().len(), 0);
        assert_eq!(s.open_bans().unwrap().len(), 1);
    }

    #[test]
    fn decisions_are_kept_by_source_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&path(dir.path(), "eth0")).unwrap();
        let row = |id: &str, target: &str| DecisionRow {
            source: origin::CROWDSEC.into(),
            id: id.into(),
            target: target.into(),
            origin: "cscli".into(),
            scenario: "manual".into(),
            expires_ms: Some(1),
        };
        s.put_decisions(&[row("1", "192.0.2.7"), row("2", "198.51.100.0/24")])
            .unwrap();
        s.put_decisions(&[row("1", "192.0.2.8")]).unwrap();
        let held = s.decisions(origin::CROWDSEC).unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(s.decisions_for("192.0.2.8").unwrap()[0].id, "1");
        s.delete_decisions(origin::CROWDSEC, &["1".into()]).unwrap();
        assert!(s.decisions_for("192.0.2.8").unwrap().is_empty());
        assert_eq!(s.decisions("apiban").unwrap().len(), 0);
    }

    #[test]
    fn a_feed_cursor_is_kept_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&path(dir.path(), "eth0")).unwrap();
        assert_eq!(s.cursor(origin::APIBAN).unwrap(), None);
        let c = Cursor {
            id: "1700000000".into(),
            full_ms: 42,
        };
        s.set_cursor(origin::APIBAN, &c).unwrap();
        s.set_cursor(origin::APIBAN, &c).unwrap();
        assert_eq!(s.cursor(origin::APIBAN).unwrap(), Some(c));
        assert_eq!(s.cursor(origin::CROWDSEC).unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "eth0");
        std::fs::write(
            &p,
            b"this is not a database, it is a note from a full disk\n".repeat(100),
        )
        .unwrap();
        let (s, aside) = State::open_or_set_aside(&p).unwrap();
        let (aside, why) = aside.expect("moved aside");
        assert!(aside.exists(), "{}", aside.display());
        assert!(format!("{why:#}").contains("not a database"), "{why:#}");
        assert!(s.open_bans().unwrap().is_empty());
        // The new file is sound.
        drop(s);
        assert!(State::open_or_set_aside(&p).unwrap().1.is_none());
    }
}
