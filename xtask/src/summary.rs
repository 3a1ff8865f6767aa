//! Test counts and the step-by-step report printed at the end of `cargo xtask test`.

use std::ops::AddAssign;

use anyhow::Result;

/// Totals gathered from libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestCounts {
    /// Adds the numbers of a libtest summary line; other lines are ignored.
    /// The marker may appear mid-line on a serial console, hence `find`.
    pub fn add_line(&mut self, line: &str) {
        let Some(start) = line.find("test result: ") else {
            return;
        };
        for part in line[start..].split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

impl AddAssign for TestCounts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

enum Outcome {
    Ok,
    Failed(String),
    Skipped(&'static str),
}

/// What happened to each step; steps keep running after a failure so one run
/// shows every problem.
#[derive(Default)]
pub struct Report {
    steps: Vec<(String, Outcome)>,
    pub counts: TestCounts,
}

impl Report {
    pub fn record(&mut self, step: impl Into<String>, result: Result<()>) {
        let step = step.into();
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                eprintln!("xtask: {step}: FAILED: {e:#}");
                Outcome::Failed(format!("{e:#}"))
            }
        };
        self.steps.push((step, outcome));
    }

    pub fn skip(&mut self, step: impl Into<String>, reason: &'static str) {
        self.steps.push((step.into(), Outcome::Skipped(reason)));
    }

    pub fn failed(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }

    /// Prints one line per step, then a closing `N passed, N failed, N skipped`
    /// line that CI and humans can read at a glance.
    pub fn print(&self) {
        eprintln!("xtask: ---- summary ----");
        for (step, outcome) in &self.steps {
            match outcome {
                Outcome::Ok => eprintln!("xtask: {step}: ok"),
                Outcome::Failed(why) => eprintln!("xtask: {step}: FAILED: {why}"),
                Outcome::Skipped(why) => eprintln!("xtask: {step}: SKIPPED ({why})"),
            }
        }
        let c = self.counts;
        println!(
            "xtask: {} passed, {} failed, {} skipped",
            c.passed, c.failed, c.ignored
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summary() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line("[    1.2] junk test result: FAILED. 1 passed; 0 failed; 0 ignored; 0 measured");
        c.add_line("running 4 tests");
        assert_eq!(
            c,
            TestCounts {
                passed: 4,
                failed: 1,
                ignored: 2
            }
        );
    }
}
