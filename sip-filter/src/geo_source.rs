//! Where geo-blocked networks come from: a MaxMind DB country database and CIDR zone files.
//!
//! Country databases (GeoLite2-Country, DB-IP country lite) are IPv6 trees that hold IPv4 under
//! `::/96` and alias the IPv4-mapped, 6to4 and Teredo ranges to it. Networks are reported here
//! the way the kernel keys them: IPv4 as IPv4 (once), IPv6 outside those aliases as IPv6.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use ipnet::{IpNet, Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};
use ipnetwork::IpNetwork;
use maxminddb::{Reader, geoip2};

use crate::config::{Geo, parse_net};

/// What `geo lookup` reports for one address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GeoVerdict {
    /// ISO country code from the database, if the address is in it.
    pub country: Option<String>,
    /// The network of the database record that matched.
    pub network: Option<IpNet>,
    pub blocked: bool,
    /// Human-readable reason, e.g. "country PS is in block_countries" or
    /// "198.51.100.0/24 listed in /etc/sip-filter/blocked.zone:3".
    pub why: String,
}

/// Address space that `allow_countries` never blocks: "this network", private, shared (CGNAT),
/// loopback, link-local, multicast and reserved ranges, and their IPv6 counterparts. Traffic
/// from them is local by nature (or bogus), the database places none of it in a country, and
/// blocking it would cut the PBX off from its own LAN. `::ffff:0:0/96` matters most: the
/// kernel keys IPv4 sources as IPv4-mapped IPv6, so blocking it would block all of IPv4.
pub const SPECIAL_USE: [&str; 15] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fe80::/10",
    "fc00::/7",
    "ff00::/8",
];

/// The parsed [`SPECIAL_USE`] ranges.
pub fn special_use() -> Vec<IpNet> {
    SPECIAL_USE
        .iter()
        .map(|s| s.parse().expect("SPECIAL_USE entries are CIDRs"))
        .collect()
}

/// IPv6 ranges where a country database keeps or mirrors its IPv4 data: IPv4-compatible
/// (where the IPv4 tree lives), IPv4-mapped, Teredo and 6to4 (aliases of it). They carry no
/// country of their own: their data is reported once, as IPv4, and the IPv6 addresses in them
/// are not placed in any country.
const V4_MIRRORS: [&str; 4] = ["::/96", "::ffff:0:0/96", "2001::/32", "2002::/16"];

fn v4_mirror(net: &Ipv6Net) -> Option<Ipv6Net> {
    V4_MIRRORS
        .iter()
        .map(|s| s.parse::<Ipv6Net>().expect("V4_MIRRORS entries are CIDRs"))
        .find(|mirror| mirror.contains(net))
}

/// Where an IPv6 tree keeps IPv4: the IPv4-compatible block `::/96`.
const V4_IN_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 96);

/// Every network the geo settings block (not yet aggregated).
pub fn blocked_networks(geo: &Geo) -> Result<Vec<IpNet>> {
    let mut blocked = Vec::new();
    let block = !geo.block_countries.is_empty();
    let allow = !geo.allow_countries.is_empty();
    if block || allow {
        // The configuration refuses countries without a database; a `Geo` built in code may not.
        let Some(path) = &geo.database else {
            bail!("block_countries/allow_countries need a geo database");
        };
        let db = CountryDb::open(path)?;
        let mut allowed = Vec::new();
        db.for_each_network(|net, code| {
            let listed = |list: &[String]| code.is_some_and(|c| list.iter().any(|l| l == c));
            if block && listed(&geo.block_countries) {
                blocked.push(net);
            } else if allow && listed(&geo.allow_countries) {
                allowed.push(net);
            }
        })?;
        if allow {
            allowed.extend(special_use());
            blocked.extend(complement(&allowed));
        }
    }
    for file in &geo.cidr_files {
        blocked.extend(read_zone(file)?.into_iter().map(|e| e.net));
    }
    Ok(blocked)
}

/// Explains the geo verdict for one address.
pub fn lookup(geo: &Geo, ip: IpAddr) -> Result<GeoVerdict> {
    // `::ffff:a.b.c.d` is how the kernel sees IPv4 anyway: judge it as the IPv4 address.
    let ip = ip.to_canonical();
    let mirror = match ip {
        IpAddr::V6(v6) => v4_mirror(&Ipv6Net::from(v6)),
        IpAddr::V4(_) => None,
    };
    let (country, network) = match (&geo.database, mirror) {
        // The database answers for these with the country of the IPv4 address they embed;
        // `blocked_networks` does not block them that way, so neither does the verdict.
        (Some(path), None) => CountryDb::open(path)?.lookup(ip)?,
        _ => (None, None),
    };
    let unknown = || match mirror {
        Some(m) => format!("{m} mirrors IPv4 in country databases and has no country"),
        None => "not in the country database".to_owned(),
    };

    let mut blocked_because = Vec::new();
    let mut passes_because = Vec::new();
    if !geo.block_countries.is_empty() {
        match &country {
            Some(c) if geo.block_countries.contains(c) => {
                blocked_because.push(format!("country {c} is in block_countries"));
            }
            Some(c) => passes_because.push(format!("country {c} is not in block_countries")),
            None => passes_because.push(unknown()),
        }
    } else if !geo.allow_countries.is_empty() {
        if let Some(special) = special_use().into_iter().find(|n| n.contains(&ip)) {
            passes_because.push(format!(
                "{special} is special-use address space, which allow_countries never blocks"
            ));
        } else {
            match &country {
                Some(c) if geo.allow_countries.contains(c) => {
                    passes_because.push(format!("country {c} is in allow_countries"));
                }
                Some(c) => blocked_because.push(format!("country {c} is not in allow_countries")),
                None => blocked_because.push(format!(
                    "{}, and allow_countries blocks everything outside the listed countries",
                    unknown()
                )),
            }
        }
    }
    for file in &geo.cidr_files {
        for entry in read_zone(file)? {
            if entry.net.contains(&ip) {
                blocked_because.push(format!(
                    "{} listed in {}:{}",
                    entry.net,
                    file.display(),
                    entry.line
                ));
            }
        }
    }
    if blocked_because.is_empty() && !geo.cidr_files.is_empty() {
        passes_because.push("not listed in any cidr_files".to_owned());
    }

    let blocked = !blocked_because.is_empty();
    let why = if blocked {
        blocked_because.join("; ")
    } else if passes_because.is_empty() {
        "no geo-blocking is configured".to_owned()
    } else {
        passes_because.join("; ")
    };
    Ok(GeoVerdict {
        country,
        network,
        blocked,
        why,
    })
}

/// One network of a zone file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneEntry {
    pub net: IpNet,
    /// 1-based line in the file.
    pub line: usize,
}

/// Reads a zone file: one address or CIDR per line, `#` starts a comment, blank lines are
/// ignored. The format of the country and blocklist files published for firewalls.
pub fn read_zone(path: &Path) -> Result<Vec<ZoneEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read CIDR file {}", path.display()))?;
    parse_zone(&text, path)
}

/// Parses zone-file text; `path` only names the file in errors.
pub fn parse_zone(text: &str, path: &Path) -> Result<Vec<ZoneEntry>> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let Some(net) = parse_net(content) else {
            bail!(
                "{}:{}: {content:?} is not an address or CIDR (one per line, # for comments)",
                path.display(),
                i + 1
            );
        };
        entries.push(ZoneEntry { net, line: i + 1 });
    }
    Ok(entries)
}

/// An open country database.
struct CountryDb<'p> {
    path: &'p Path,
    reader: Reader<Vec<u8>>,
}

impl<'p> CountryDb<'p> {
    fn open(path: &'p Path) -> Result<Self> {
        let reader = Reader::open_readfile(path)
            .with_context(|| format!("cannot open geo database {}", path.display()))?;
        Ok(Self { path, reader })
    }

    /// Calls `f` with every network of the database and its country code (if the record has
    /// one), IPv4 networks once as IPv4. Fails if no record has a country: a database of
    /// another kind (ASN, ISP) would otherwise silently block nothing, or everything.
    fn for_each_network(&self, mut f: impl FnMut(IpNet, Option<&str>)) -> Result<()> {
        let everything = if self.reader.metadata.ip_version == 4 {
            IpNetwork::new(Ipv4Addr::UNSPECIFIED.into(), 0)
        } else {
            IpNetwork::new(Ipv6Addr::UNSPECIFIED.into(), 0)
        }
        .expect("/0 is a valid prefix");
        let mut any_country = false;
        let within = self
            .reader
            .within::<geoip2::Country>(everything)
            .with_context(|| format!("reading geo database {}", self.path.display()))?;
        for item in within {
            let item =
                item.with_context(|| format!("reading geo database {}", self.path.display()))?;
            let code = country_code(&item.info);
            any_country |= code.is_some();
            let net = IpNet::new(item.ip_net.network(), item.ip_net.prefix())
                .expect("the database yields valid prefixes");
            for net in as_kernel_sees(net) {
                f(net, code);
            }
        }
        if !any_country {
            bail!(
                "geo database {} has no country data (database type {:?}): use a country \
                 database such as GeoLite2-Country or DB-IP IP-to-Country Lite",
                self.path.display(),
                self.reader.metadata.database_type
            );
        }
        Ok(())
    }

    /// The country and record network of `ip`.
    fn lookup(&self, ip: IpAddr) -> Result<(Option<String>, Option<IpNet>)> {
        if ip.is_ipv6() && self.reader.metadata.ip_version == 4 {
            return Ok((None, None));
        }
        let (record, prefix) = self
            .reader
            .lookup_prefix::<geoip2::Country>(ip)
            .with_context(|| format!("looking up {ip} in {}", self.path.display()))?;
        Ok(match record {
            Some(record) => {
                let prefix = u8::try_from(prefix).expect("prefix length fits in u8");
                let net = IpNet::new(ip, prefix)
                    .expect("the database yields valid prefixes")
                    .trunc();
                (country_code(&record).map(str::to_owned), Some(net))
            }
            None => (None, None),
        })
    }
}

/// The country a record places its network in: where it is used (`country`), or, for records
/// without one (some anycast and satellite networks), where it is registered.
fn country_code<'a>(record: &geoip2::Country<'a>) -> Option<&'a str> {
    let code = |c: &Option<geoip2::country::Country<'a>>| c.as_ref().and_then(|c| c.iso_code);
    code(&record.country).or_else(|| code(&record.registered_country))
}

/// A network of the database as the kernel keys it: IPv4 stored under `::/96` becomes IPv4,
/// the aliases of it disappear, other IPv6 stays.
fn as_kernel_sees(net: IpNet) -> Vec<IpNet> {
    let IpNet::V6(v6) = net else {
        return vec![net];
    };
    if V4_IN_V6.contains(&v6) {
        let bits = u128::from(v6.network()) as u32;
        let v4 = Ipv4Net::new(Ipv4Addr::from(bits), v6.prefix_len() - 96).expect("prefix <= 32");
        return vec![IpNet::V4(v4)];
    }
    if v4_mirror(&v6).is_some() {
        return Vec::new();
    }
    if v6.contains(&V4_IN_V6) {
        // One record over more than the IPv4 block (only seen in toy databases): it holds
        // all of IPv4 too.
        return vec![
            net,
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0)),
        ];
    }
    vec![net]
}

/// Everything not covered by `keep`, as CIDRs, over `0.0.0.0/0` and `::/0`.
fn complement(keep: &[IpNet]) -> Vec<IpNet> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for net in IpNet::aggregate(&keep.to_vec()) {
        match net {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    let mut out = Vec::new();
    for (start, end) in gaps(v4, u128::from(u32::MAX)) {
        out.extend(
            Ipv4Subnets::new(Ipv4Addr::from(start as u32), Ipv4Addr::from(end as u32), 0)
                .map(IpNet::V4),
        );
    }
    for (start, end) in gaps(v6, u128::MAX) {
        out.extend(Ipv6Subnets::new(Ipv6Addr::from(start), Ipv6Addr::from(end), 0).map(IpNet::V6));
    }
    out
}

/// The inclusive ranges of `0..=max` that no range of `covered` (inclusive, disjoint) touches.
fn gaps(mut covered: Vec<(u128, u128)>, max: u128) -> Vec<(u128, u128)> {
    covered.sort_unstable();
    let mut out = Vec::new();
    // The first address not yet known to be covered; None once past `max`.
    let mut next = Some(0u128);
    for (start, end) in covered {
        if let Some(from) = next
            && from < start
        {
            out.push((from, start - 1));
        }
        let after = (end < max).then(|| end + 1);
        next = next.zip(after).map(|(n, a)| n.max(a));
    }
    if let Some(from) = next {
        out.push((from, max));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use testkit::mmdb;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sorted(mut nets: Vec<IpNet>) -> Vec<IpNet> {
        nets.sort();
        nets
    }

    fn covers(nets: &[IpNet], ip: IpAddr) -> bool {
        nets.iter().any(|n| n.contains(&ip))
    }

    fn overlap(a: &IpNet, b: &IpNet) -> bool {
        a.contains(b) || b.contains(a)
    }

    /// A temporary directory with a country database of documentation ranges:
    ///
    /// | network              | record                     |
    /// |----------------------|----------------------------|
    /// | 192.0.2.0/24         | PS                         |
    /// | 198.51.100.0/24      | US                         |
    /// | 198.51.100.128/25    | AL (overrides US)          |
    /// | 203.0.113.0/24       | registered_country PS only |
    /// | 2001:db8:1::/48      | PS                         |
    /// | 2001:db8:2::/48      | US                         |
    /// | 2001:db8:3::/48      | registered_country AL only |
    struct Fixture {
        dir: tempfile::TempDir,
        db: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("country.mmdb");
            let records = [
                ("192.0.2.0/24", mmdb::country_record("PS")),
                ("198.51.100.0/24", mmdb::country_record("US")),
                ("198.51.100.128/25", mmdb::country_record("AL")),
                ("203.0.113.0/24", mmdb::registered_country_record("PS")),
                ("2001:db8:1::/48", mmdb::country_record("PS")),
                ("2001:db8:2::/48", mmdb::country_record("US")),
                ("2001:db8:3::/48", mmdb::registered_country_record("AL")),
            ];
            mmdb::write_records(&db, mmdb::IpVersion::V6, mmdb::COUNTRY_DB_TYPE, &records).unwrap();
            Self { dir, db }
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }

        fn geo(&self, block: &[&str], allow: &[&str]) -> Geo {
            Geo {
                database: Some(self.db.clone()),
                block_countries: block.iter().map(|s| s.to_string()).collect(),
                allow_countries: allow.iter().map(|s| s.to_string()).collect(),
                cidr_files: vec![],
            }
        }
    }

    /// `lookup` and `blocked_networks` must agree on every address.
    fn assert_consistent(geo: &Geo, blocked: &[IpNet], addrs: &[&str]) {
        for a in addrs {
            let v = lookup(geo, ip(a)).unwrap();
            // The kernel keys IPv4-mapped sources as IPv4.
            assert_eq!(
                v.blocked,
                covers(blocked, ip(a).to_canonical()),
                "{a}: {v:?}"
            );
        }
    }

    const PROBES: &[&str] = &[
        "192.0.2.1",
        "198.51.100.1",
        "198.51.100.200",
        "203.0.113.5",
        "8.8.8.8",
        "10.1.2.3",
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "0.0.0.0",
        "2001:db8:1::1",
        "2001:db8:2::1",
        "2001:db8:3::1",
        "2001:db8:4::1",
        "2a00::1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "::ffff:192.0.2.1",
        "::ffff:198.51.100.1",
        "::c000:201",
        "2002:c000:201::1",
        "2002:c633:6401::1",
        "2001:0:c000:201::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ];

    #[test]
    fn generated_database_reads_as_geolite2() {
        let f = Fixture::new();
        let reader = Reader::open_readfile(&f.db).unwrap();
        assert_eq!(reader.metadata.database_type, "GeoLite2-Country");
        let c: geoip2::Country = reader.lookup(ip("192.0.2.9")).unwrap().unwrap();
        let country = c.country.unwrap();
        assert_eq!(country.iso_code, Some("PS"));
        assert_eq!(country.names.unwrap()["en"], "Test country PS");
        // IPv4 is also reachable through the IPv4-mapped alias, as in real databases.
        let c: geoip2::Country = reader.lookup(ip("::ffff:192.0.2.9")).unwrap().unwrap();
        assert_eq!(c.country.unwrap().iso_code, Some("PS"));
        let path = f.dir.path().join("simple.mmdb");
        mmdb::write_country_db(&path, &[("192.0.2.0/24", "DE"), ("2001:db8::/32", "FR")]).unwrap();
        let db = CountryDb::open(&path).unwrap();
        assert_eq!(
            db.lookup(ip("2001:db8::7")).unwrap(),
            (Some("FR".to_owned()), Some(net("2001:db8::/32")))
        );
    }

    #[test]
    fn walks_ipv4_once_as_ipv4() {
        let f = Fixture::new();
        let db = CountryDb::open(&f.db).unwrap();
        let mut seen = Vec::new();
        db.for_each_network(|n, c| seen.push((n, c.map(str::to_owned))))
            .unwrap();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            sorted(seen.iter().map(|(n, _)| *n).collect()),
            sorted(vec![
                net("192.0.2.0/24"),
                net("198.51.100.0/25"),
                net("198.51.100.128/25"),
                net("203.0.113.0/24"),
                net("2001:db8:1::/48"),
                net("2001:db8:2::/48"),
                net("2001:db8:3::/48"),
            ])
        );
        assert!(seen.contains(&(net("203.0.113.0/24"), some("PS"))));
        assert!(seen.contains(&(net("2001:db8:3::/48"), some("AL"))));
    }

    #[test]
    fn block_countries() {
        let f = Fixture::new();
        let geo = f.geo(&["PS", "AL"], &[]);
        let blocked = blocked_networks(&geo).unwrap();
        assert_eq!(
            sorted(blocked.clone()),
            sorted(vec![
                net("192.0.2.0/24"),
                net("198.51.100.128/25"),
                net("203.0.113.0/24"),
                net("2001:db8:1::/48"),
                net("2001:db8:3::/48"),
            ])
        );
        assert_consistent(&geo, &blocked, PROBES);

        let v = lookup(&geo, ip("198.51.100.200")).unwrap();
        assert_eq!(
            v,
            GeoVerdict {
                country: Some("AL".into()),
                network: Some(net("198.51.100.128/25")),
                blocked: true,
                why: "country AL is in block_countries".into(),
            }
        );
        let v = lookup(&geo, ip("::ffff:198.51.100.1")).unwrap();
        assert_eq!(v.country.as_deref(), Some("US"));
        assert_eq!(v.network, Some(net("198.51.100.0/25")));
        assert_eq!(v.why, "country US is not in block_countries");
        let v = lookup(&geo, ip("8.8.8.8")).unwrap();
        assert_eq!((v.country, v.network), (None, None));
        assert_eq!(v.why, "not in the country database");
        let v = lookup(&geo, ip("2001:db8:3::9")).unwrap();
        assert_eq!(v.country.as_deref(), Some("AL"));
        assert!(v.blocked);
    }

    #[test]
    fn allow_countries() {
        let f = Fixture::new();
        let geo = f.geo(&[], &["US"]);
        let blocked = blocked_networks(&geo).unwrap();

        // Special-use space is never blocked, not even in part.
        for special in special_use() {
            assert!(
                !blocked.iter().any(|b| overlap(b, &special)),
                "{special} is blocked"
            );
        }
        // Blocked, allowed and special-use space tile the whole address space exactly.
        let mut all = blocked.clone();
        all.extend([net("198.51.100.0/25"), net("2001:db8:2::/48")]);
        all.extend(special_use());
        assert_eq!(IpNet::aggregate(&all), vec![net("0.0.0.0/0"), net("::/0")]);
        let all = sorted(all);
        for pair in all.windows(2) {
            assert!(
                !overlap(&pair[0], &pair[1]),
                "{} overlaps {}",
                pair[0],
                pair[1]
            );
        }

        for (addr, is_blocked) in [
            ("198.51.100.1", false),
            ("198.51.100.200", true),
            ("192.0.2.1", true),
            ("203.0.113.5", true),
            ("8.8.8.8", true),
            ("10.1.2.3", false),
            ("192.168.1.1", false),
            ("2001:db8:2::1", false),
            ("2001:db8:1::1", true),
            ("2001:db8:3::1", true),
            ("2a00::1", true),
            ("fe80::1", false),
            ("::1", false),
            ("2002:c633:6401::1", true),
        ] {
            assert_eq!(covers(&blocked, ip(addr)), is_blocked, "{addr}");
        }
        assert_consistent(&geo, &blocked, PROBES);

        assert_eq!(
            lookup(&geo, ip("198.51.100.1")).unwrap().why,
            "country US is in allow_countries"
        );
        assert_eq!(
            lookup(&geo, ip("2001:db8:1::1")).unwrap().why,
            "country PS is not in allow_countries"
        );
        assert_eq!(
            lookup(&geo, ip("8.8.8.8")).unwrap().why,
            "not in the country database, and allow_countries blocks everything outside the \
             listed countries"
        );
        assert_eq!(
            lookup(&geo, ip("10.1.2.3")).unwrap().why,
            "10.0.0.0/8 is special-use address space, which allow_countries never blocks"
        );
        let v = lookup(&geo, ip("2002:c633:6401::1")).unwrap();
        assert_eq!(v.country, None);
        assert_eq!(
            v.why,
            "2002::/16 mirrors IPv4 in country databases and has no country, and \
             allow_countries blocks everything outside the listed countries"
        );
    }

    #[test]
    fn allow_countries_are_compact() {
        // The complement is emitted as the fewest CIDRs, not one per address block.
        let f = Fixture::new();
        let blocked = blocked_networks(&f.geo(&[], &["US"])).unwrap();
        assert_eq!(IpNet::aggregate(&blocked).len(), blocked.len());
        assert!(blocked.len() < 400, "{}", blocked.len());
    }

    #[test]
    fn ipv4_only_database() {
        let f = Fixture::new();
        let path = f.dir.path().join("v4.mmdb");
        mmdb::write_records(
            &path,
            mmdb::IpVersion::V4,
            "DBIP-Country-Lite",
            &[("192.0.2.0/24", mmdb::country_record("PS"))],
        )
        .unwrap();
        let geo = Geo {
            database: Some(path),
            block_countries: vec!["PS".into()],
            ..Geo::default()
        };
        assert_eq!(blocked_networks(&geo).unwrap(), [net("192.0.2.0/24")]);
        let v = lookup(&geo, ip("2001:db8::1")).unwrap();
        assert_eq!((v.country, v.blocked), (None, false));
        assert!(lookup(&geo, ip("192.0.2.200")).unwrap().blocked);
    }

    #[test]
    fn zone_files() {
        let f = Fixture::new();
        let zone = f.file(
            "blocked.zone",
            "# networks to block\n\
             \n\
             198.51.100.0/24\n\
             \t203.0.113.7   # one address\n\
             2001:db8:100::/48\r\n\
             2001:db8::1\n\
             # 192.0.2.0/24 is commented out\n",
        );
        assert_eq!(
            read_zone(&zone).unwrap(),
            [
                ZoneEntry {
                    net: net("198.51.100.0/24"),
                    line: 3
                },
                ZoneEntry {
                    net: net("203.0.113.7/32"),
                    line: 4
                },
                ZoneEntry {
                    net: net("2001:db8:100::/48"),
                    line: 5
                },
                ZoneEntry {
                    net: net("2001:db8::1/128"),
                    line: 6
                },
            ]
        );
        let other = f.file("other.zone", "192.0.2.0/25\n");
        // No database needed for zone files alone.
        let geo = Geo {
            cidr_files: vec![zone.clone(), other],
            ..Geo::default()
        };
        let blocked = blocked_networks(&geo).unwrap();
        assert_eq!(blocked.len(), 5);
        assert_consistent(&geo, &blocked, PROBES);
        let v = lookup(&geo, ip("203.0.113.7")).unwrap();
        assert_eq!(
            v,
            GeoVerdict {
                country: None,
                network: None,
                blocked: true,
                why: format!("203.0.113.7/32 listed in {}:4", zone.display()),
            }
        );
        assert_eq!(
            lookup(&geo, ip("203.0.113.8")).unwrap().why,
            "not listed in any cidr_files"
        );

        // With countries too: every reason is given.
        let mut geo = f.geo(&["US"], &[]);
        geo.cidr_files = vec![zone.clone()];
        let v = lookup(&geo, ip("198.51.100.1")).unwrap();
        assert_eq!(
            v.why,
            format!(
                "country US is in block_countries; 198.51.100.0/24 listed in {}:3",
                zone.display()
            )
        );
        let v = lookup(&geo, ip("192.0.2.1")).unwrap();
        assert!(!v.blocked);
        assert_eq!(
            v.why,
            "country PS is not in block_countries; not listed in any cidr_files"
        );
    }

    #[test]
    fn zone_file_errors() {
        let f = Fixture::new();
        let bad = f.file("bad.zone", "# ok\n198.51.100.0/24\n198.51.100.0/33\n");
        let geo = Geo {
            cidr_files: vec![bad.clone()],
            ..Geo::default()
        };
        assert_eq!(
            blocked_networks(&geo).unwrap_err().to_string(),
            format!(
                "{}:3: \"198.51.100.0/33\" is not an address or CIDR (one per line, # for \
                 comments)",
                bad.display()
            )
        );
        assert!(lookup(&geo, ip("192.0.2.1")).is_err());
        let two = parse_zone("192.0.2.0/24 198.51.100.0/24\n", Path::new("x.zone")).unwrap_err();
        assert!(two.to_string().starts_with("x.zone:1: "), "{two}");

        let missing = f.dir.path().join("missing.zone");
        let geo = Geo {
            cidr_files: vec![missing.clone()],
            ..Geo::default()
        };
        let e = format!("{:#}", blocked_networks(&geo).unwrap_err());
        assert!(
            e.starts_with(&format!("cannot read CIDR file {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn database_errors() {
        let f = Fixture::new();
        let missing = f.dir.path().join("missing.mmdb");
        let geo = Geo {
            database: Some(missing.clone()),
            block_countries: vec!["PS".into()],
            ..Geo::default()
        };
        let e = format!("{:#}", blocked_networks(&geo).unwrap_err());
        assert!(
            e.starts_with(&format!("cannot open geo database {}: ", missing.display())),
            "{e}"
        );
        assert!(lookup(&geo, ip("192.0.2.1")).is_err());

        let junk = f.file("junk.mmdb", "not a database");
        let geo = Geo {
            database: Some(junk.clone()),
            allow_countries: vec!["US".into()],
            ..Geo::default()
        };
        let e = format!("{:#}", blocked_networks(&geo).unwrap_err());
        assert!(
            e.starts_with(&format!("cannot open geo database {}: ", junk.display())),
            "{e}"
        );

        let asn = f.dir.path().join("asn.mmdb");
        mmdb::write_records(
            &asn,
            mmdb::IpVersion::V6,
            "GeoLite2-ASN",
            &[(
                "192.0.2.0/24",
                mmdb::Value::map([("autonomous_system_number", mmdb::Value::from(64_512u32))]),
            )],
        )
        .unwrap();
        let geo = Geo {
            database: Some(asn.clone()),
            block_countries: vec!["PS".into()],
            ..Geo::default()
        };
        assert_eq!(
            blocked_networks(&geo).unwrap_err().to_string(),
            format!(
                "geo database {} has no country data (database type \"GeoLite2-ASN\"): use a \
                 country database such as GeoLite2-Country or DB-IP IP-to-Country Lite",
                asn.display()
            )
        );
    }

    #[test]
    fn nothing_configured() {
        let geo = Geo::default();
        assert!(blocked_networks(&geo).unwrap().is_empty());
        let v = lookup(&geo, ip("192.0.2.1")).unwrap();
        assert!(!v.blocked);
        assert_eq!(v.why, "no geo-blocking is configured");
        // A database alone only informs.
        let f = Fixture::new();
        let geo = f.geo(&[], &[]);
        assert!(blocked_networks(&geo).unwrap().is_empty());
        let v = lookup(&geo, ip("192.0.2.1")).unwrap();
        assert_eq!((v.country.as_deref(), v.blocked), (Some("PS"), false));
        assert_eq!(v.why, "no geo-blocking is configured");
    }

    #[test]
    fn database_networks_as_the_kernel_keys_them() {
        let kernel = |s: &str| as_kernel_sees(net(s));
        assert_eq!(kernel("192.0.2.0/24"), [net("192.0.2.0/24")]);
        assert_eq!(kernel("::c000:200/120"), [net("192.0.2.0/24")]);
        assert_eq!(kernel("::/96"), [net("0.0.0.0/0")]);
        // Copies of IPv4 data in its aliases (databases that do not alias by pointer).
        assert_eq!(kernel("::ffff:c000:200/120"), []);
        assert_eq!(kernel("2002:c000:200::/40"), []);
        assert_eq!(kernel("2001:0:c000:200::/56"), []);
        assert_eq!(kernel("2001:db8::/32"), [net("2001:db8::/32")]);
        assert_eq!(kernel("::/64"), [net("::/64"), net("0.0.0.0/0")]);
    }

    #[test]
    fn complement_edges() {
        assert_eq!(complement(&[]), [net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(
            complement(&[net("0.0.0.0/0"), net("::/0")]),
            Vec::<IpNet>::new()
        );
        assert_eq!(
            complement(&[net("0.0.0.0/1"), net("192.0.0.0/2"), net("::/1")]),
            [net("128.0.0.0/2"), net("8000::/1")]
        );
        assert_eq!(
            complement(&[net("0.0.0.1/32"), net("255.255.255.255/32"), net("::/0")]),
            {
                let mut v = vec![net("0.0.0.0/32")];
                v.extend(
                    Ipv4Subnets::new(ip4("0.0.0.2"), ip4("255.255.255.254"), 0).map(IpNet::V4),
                );
                v
            }
        );
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
}
