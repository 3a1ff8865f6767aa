//! The default high-risk destinations (`[calls] default_block = true`, on unless turned off):
//! blocked unless the configuration allows them. Each prefix names its source.
pub const DEFAULT_BLOCK: &[(&str, &str)] = &[
    // ITU-T E.164 assigned codes for global services (ITU Operational Bulletin, "List of ITU-T
    // Recommendation E.164 assigned country codes"): satellite and international networks,
    // billed at premium rates and a staple of IRSF.
    ("+881", "ITU E.164: Global Mobile Satellite System"),
    ("+882", "ITU E.164: International Networks"),
    ("+883", "ITU E.164: International Networks"),
    // NANP area codes outside the US and Canada that look domestic (1 + 10 digits) but bill as
    // international: NANPA's list of NANP countries, and the FCC's "One Ring" scam consumer
    // guide (268, 284, 473, 649, 767, 809, 829, 849, 876). 787/939 (Puerto Rico) and 340 (USVI)
    // bill as US domestic and are not listed.
    ("+1242", "NANPA: Bahamas"),
    ("+1246", "NANPA: Barbados"),
    ("+1264", "NANPA: Anguilla"),
    ("+1268", "NANPA: Antigua and Barbuda; FCC One Ring alert"),
    ("+1284", "NANPA: British Virgin Islands; FCC One Ring alert"),
    ("+1345", "NANPA: Cayman Islands"),
    ("+1441", "NANPA: Bermuda"),
    ("+1473", "NANPA: Grenada; FCC One Ring alert"),
    ("+1649", "NANPA: Turks and Caicos; FCC One Ring alert"),
    ("+1658", "NANPA: Jamaica (overlay)"),
    ("+1664", "NANPA: Montserrat"),
    ("+1721", "NANPA: Sint Maarten"),
    ("+1758", "NANPA: Saint Lucia"),
    ("+1767", "NANPA: Dominica; FCC One Ring alert"),
    ("+1784", "NANPA: Saint Vincent and the Grenadines"),
    ("+1809", "NANPA: Dominican Republic; FCC One Ring alert"),
    ("+1829", "NANPA: Dominican Republic; FCC One Ring alert"),
    ("+1849", "NANPA: Dominican Republic; FCC One Ring alert"),
    ("+1868", "NANPA: Trinidad and Tobago"),
    ("+1869", "NANPA: Saint Kitts and Nevis"),
    ("+1876", "NANPA: Jamaica; FCC One Ring alert"),
    // Top IRSF terminating countries in the CFCA Global Telecom Fraud Loss Survey and carriers'
    // published hot lists.
    ("+53", "CFCA: Cuba"),
    ("+252", "CFCA: Somalia"),
    ("+232", "CFCA: Sierra Leone"),
    ("+224", "CFCA: Guinea"),
    ("+220", "CFCA: Gambia"),
    ("+371", "CFCA: Latvia"),
    ("+370", "CFCA: Lithuania"),
    ("+239", "CFCA: Sao Tome and Principe"),
    ("+960", "CFCA: Maldives"),
    ("+216", "CFCA: Tunisia"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_and_never_us_domestic() {
        for (p, why) in DEFAULT_BLOCK {
            assert!(
                p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()),
                "{p}"
            );
            assert!(!why.is_empty());
        }
        for domestic in ["+1787", "+1939", "+1340", "+1212"] {
            assert!(
                !DEFAULT_BLOCK.iter().any(|(p, _)| domestic.starts_with(p)),
                "{domestic}"
            );
        }
        let mut v: Vec<&str> = DEFAULT_BLOCK.iter().map(|(p, _)| *p).collect();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), DEFAULT_BLOCK.len(), "no prefix twice");
    }
}
