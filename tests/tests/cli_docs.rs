//! `sip-filter completions SHELL` and `sip-filter man`: generated from the command definitions,
//! checked with the tools that consume them (bash's parser, groff).
use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use tests::filter::bin;

/// Every subcommand an operator can type.
const COMMANDS: &[&str] = &[
    "run",
    "detach",
    "check-config",
    "ban",
    "allow",
    "geo",
    "stats",
    "status",
    "top",
    "replay",
    "completions",
    "man",
];

fn sip_filter(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn stdout_ok(args: &[&str]) -> String {
    let o = sip_filter(args);
    assert!(
        o.status.success(),
        "sip-filter {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Pipes `input` through `cmd args`, returning (success, stdout, stderr).
fn pipe(cmd: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut p = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd} (`cargo xtask setup` installs it): {e}"));
    p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bash_completion_parses_and_knows_every_command() {
    let script = stdout_ok(&["completions", "bash"]);
    let (ok, _, err) = pipe("bash", &["-n"], &script);
    assert!(ok, "bash -n rejects the completion script: {err}");
    for c in COMMANDS {
        assert!(script.contains(c), "completion lacks {c}");
    }
    for shell in ["zsh", "fish"] {
        assert!(
            stdout_ok(&["completions", shell]).contains("sip-filter"),
            "{shell}"
        );
    }
    assert!(!sip_filter(&["completions", "tcsh"]).status.success());
}

#[test]
fn man_pages_render_without_warnings() {
    let page = stdout_ok(&["man"]);
    let (ok, text, err) = pipe("groff", &["-man", "-Tutf8", "-ww", "-P-cbou"], &page);
    assert!(ok && err.is_empty(), "groff: {err}");
    assert!(text.contains("SUBCOMMANDS"), "{text}");
    for c in COMMANDS {
        assert!(
            text.contains(&format!("sip-filter-{c}(8)")),
            "man lists {c}:\n{text}"
        );
    }
    for c in COMMANDS {
        let sub = stdout_ok(&["man", c]);
        let (ok, text, err) = pipe("groff", &["-man", "-Tutf8", "-ww", "-P-cbou"], &sub);
        assert!(ok && err.is_empty(), "groff on sip-filter-{c}(8): {err}");
        assert!(text.contains(&format!("sip-filter-{c}")), "{text}");
    }
    let o = sip_filter(&["man", "nope"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(err.contains("no subcommand \"nope\""), "{err}");
}
