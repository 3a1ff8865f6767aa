//! `sip-filter calls check`: the toll-fraud rules' verdict for what phones dial, in and out of
//! business hours, from the same compiled table the dataplane is to look numbers up in.
use std::process::Command;

use tests::filter::bin;

const CONFIG: &str = r#"
[calls]
country_code = "1"
outside_line = "9"
timezone = "America/New_York"
business_hours = ["Mon-Fri 08:00-17:00"]
holidays = ["2026-12-25"]
block = ["+882", "+883"]
allow = ["+1"]
after_hours_block = ["+"]
trunks = ["198.51.100.7"]
"#;

fn check(config: &std::path::Path, number: &str, at: &str) -> (String, String) {
    let o = Command::new(bin())
        .args(["calls", "check", number, "--at", at, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("rule:"), field("verdict:"))
}

#[test]
fn calls_check_decides_like_the_stories_need() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sip-filter.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    // Friday 2026-12-04: 10:05 is business hours, 17:05 is after (the cloned phone's 5 p.m.).
    let (day, evening, christmas) = ("2026-12-04 10:05", "2026-12-04 17:05", "2026-12-25 10:00");
    for (number, at, rule, verdict) in [
        ("9011882555123", day, "block \"+882\"", "blocked"),
        ("+8835551234", day, "block \"+883\"", "blocked"),
        (
            "sip:%2B8825551234@pbx.example.com",
            day,
            "block \"+882\"",
            "blocked",
        ),
        // A Caribbean look-alike dialled as a national number: the default list beats +1.
        ("18095550100", day, "default_block \"+1809\"", "blocked"),
        (
            "sip:+1-876-555-0100@pbx;user=phone",
            day,
            "default_block \"+1876\"",
            "blocked",
        ),
        (
            "tel:+252-61-555-0100",
            day,
            "default_block \"+252\"",
            "blocked",
        ),
        // Albania's mobiles: international, allowed in business hours only.
        ("0113556912345", day, "after_hours_block \"+\"", "allowed"),
        (
            "0113556912345",
            evening,
            "after_hours_block \"+\"",
            "blocked",
        ),
        (
            "0113556912345",
            christmas,
            "after_hours_block \"+\"",
            "blocked",
        ),
        // Domestic and internal calls are never blocked.
        ("12125550100", evening, "allow \"+1\"", "allowed"),
        ("912125550100", evening, "allow \"+1\"", "allowed"),
        ("1787555010", evening, "allow \"+1\"", "allowed"),
        ("101", evening, "none matches", "allowed"),
        ("sip:alice@pbx", evening, "none matches", "allowed"),
    ] {
        let (got_rule, got) = check(&cfg, number, at);
        assert!(
            got_rule.starts_with(rule) && got == verdict,
            "{number} at {at}: {got_rule} -> {got}, want {rule} -> {verdict}"
        );
    }

    // A bad rule is rejected with file:line:col, by check-config and by calls check alike.
    std::fs::write(&cfg, CONFIG.replace("\"+883\"", "\"883\"")).unwrap();
    for args in [
        vec!["check-config", cfg.to_str().unwrap()],
        vec!["calls", "check", "101", "--config", cfg.to_str().unwrap()],
    ] {
        let o = Command::new(bin()).args(&args).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("sip-filter.toml:8:18: block: \"883\" is not an E.164 prefix"),
            "{args:?}: {err}"
        );
    }
}
