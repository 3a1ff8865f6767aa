//! Echoing a child's output while reading it line by line.

use std::io::{self, ErrorKind, Read, Write};

/// Copies `reader` to our stdout as bytes arrive, not line by line, so that
/// libtest's `test name ... ` shows while a slow test runs; each complete
/// line also goes to `on_line`. With `filter`, terminal control sequences
/// are dropped first (see [`ControlFilter`]).
///
/// Reads until EOF: stopping early would leave the writer blocked on a
/// full pipe.
pub fn tee_lines(mut reader: impl Read, filter: bool, mut on_line: impl FnMut(&str)) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    let mut control = ControlFilter::default();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = if filter {
            control.apply(&buf[..n])
        } else {
            buf[..n].to_vec()
        };
        let mut stdout = io::stdout().lock();
        // A closed stdout must not stop the draining.
        let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
        for &b in &chunk {
            if b == b'\n' {
                on_line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        on_line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
    }
}

/// Drops escape sequences and other control bytes. SeaBIOS and the kernel
/// send terminal resets (`ESC c`, `ESC [2J`) that would wipe the screen of
/// whoever runs xtask. Stateful because a sequence can straddle two reads.
#[derive(Default)]
pub struct ControlFilter {
    state: State,
}

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// Inside `ESC [ ...`, until a final byte in `@..=~`.
    Csi,
}

impl ControlFilter {
    pub fn apply(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            self.state = match (self.state, b) {
                (State::Text, 0x1b) => State::Escape,
                (State::Text, b'\n' | b'\t') => {
                    out.push(b);
                    State::Text
                }
                (State::Text, b) if b < 0x20 || b == 0x7f => State::Text,
                (State::Text, b) => {
                    out.push(b);
                    State::Text
                }
                (State::Escape, b'[') => State::Csi,
                (State::Escape, _) => State::Text,
                (State::Csi, 0x40..=0x7e) => State::Text,
                (State::Csi, _) => State::Csi,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_control_sequences_even_when_split() {
        let mut f = ControlFilter::default();
        let mut out = f.apply(b"\x1bc\x1b[?7l\x1b[2");
        out.extend(f.apply(b"J\x1b[0mSeaBIOS\tx\r\n"));
        assert_eq!(out, b"SeaBIOS\tx\n");
    }

    #[test]
    fn splits_lines() {
        let mut lines = Vec::new();
        tee_lines(&b"a\r\nb\nc"[..], false, |l| lines.push(l.to_string()));
        assert_eq!(lines, ["a", "b", "c"]);
    }
}
