//! Small but real MaxMind DB (`.mmdb`) country databases for tests.
//!
//! The files are written by the `mmdb-writer` crate, so they have the layout of GeoLite2 and
//! DB-IP databases: an IPv6 tree with IPv4 under `::/96` and the IPv4-mapped, 6to4 and Teredo
//! ranges aliased to it. Readers see them exactly as they see a downloaded database.
//!
//! `sip-filter`'s own unit tests (`geo_source.rs`) use this module through `testkit`, a
//! dev-dependency of that crate: keep `testkit` free of any dependency on `sip-filter`.
use std::path::Path;

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use mmdb_writer::Writer;
pub use mmdb_writer::{IpVersion, Value};

/// The `database_type` GeoLite2 country databases carry.
pub const COUNTRY_DB_TYPE: &str = "GeoLite2-Country";

/// Writes an IPv6 country database mapping each CIDR to an ISO 3166 country code, with the
/// record shape of GeoLite2-Country (`country` and `registered_country`, each with `iso_code`
/// and `names.en`). Later entries override earlier ones where they overlap, so a sub-prefix
/// can carry another country than the network around it.
pub fn write_country_db(path: &Path, entries: &[(&str, &str)]) -> Result<()> {
    let records: Vec<(&str, Value)> = entries
        .iter()
        .map(|(cidr, iso)| (*cidr, country_record(iso)))
        .collect();
    write_records(path, IpVersion::V6, COUNTRY_DB_TYPE, &records)
}

/// Writes a database with arbitrary records, for the cases `write_country_db` does not cover:
/// IPv4-only trees, records with only `registered_country`, databases without country data.
pub fn write_records(
    path: &Path,
    ip_version: IpVersion,
    database_type: &str,
    entries: &[(&str, Value)],
) -> Result<()> {
    let mut writer = Writer::builder(database_type)
        .ip_version(ip_version)
        .description(&[("en", "sip-filter test database")])
        .build();
    for (cidr, record) in entries {
        let net: IpNet = cidr
            .parse()
            .with_context(|| format!("test database entry {cidr:?} is not a CIDR"))?;
        writer
            .insert_value(net, record.clone())
            .with_context(|| format!("inserting {cidr} into the test database"))?;
    }
    let bytes = writer.to_bytes().context("serializing the test database")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A GeoLite2-Country record for `iso` (also its registered country, as for most networks).
pub fn country_record(iso: &str) -> Value {
    Value::map([
        ("country", country(iso)),
        ("registered_country", country(iso)),
    ])
}

/// A record that has only `registered_country`, as GeoLite2 has for some anycast and
/// satellite networks.
pub fn registered_country_record(iso: &str) -> Value {
    Value::map([("registered_country", country(iso))])
}

fn country(iso: &str) -> Value {
    Value::map([
        ("iso_code", Value::from(iso)),
        (
            "names",
            Value::map([("en", Value::from(format!("Test country {iso}")))]),
        ),
    ])
}
