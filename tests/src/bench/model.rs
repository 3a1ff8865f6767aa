//! What a part produces: tables of rows, each row a figure measured once per round.
use crate::bench::stats::Summary;

/// A goal from the issue, expressed as "this row's ratio to its baseline is at most `max_ratio`".
#[derive(Clone, Debug)]
pub struct Goal {
    pub text: String,
    pub max_ratio: f64,
}

/// One figure: a measurement per round, optionally compared with another row of the same part
/// measured in the same rounds.
#[derive(Clone, Debug)]
pub struct Row {
    /// Stable identifier (`part.table.figure`), the same in quick and full runs.
    pub id: String,
    pub label: String,
    pub unit: String,
    /// One value per round, in round order.
    pub samples: Vec<f64>,
    /// Id of the row this one is divided by, round by round.
    pub baseline: Option<String>,
    pub goal: Option<Goal>,
    /// Further per-round values shown beside the main one: (name, unit, samples).
    pub extras: Vec<(String, String, Vec<f64>)>,
    pub note: String,
}

impl Row {
    pub fn new(id: &str, label: &str, unit: &str, samples: Vec<f64>) -> Self {
        Self {
            id: id.to_string(),
            label: label.to_string(),
            unit: unit.to_string(),
            samples,
            baseline: None,
            goal: None,
            extras: Vec::new(),
            note: String::new(),
        }
    }

    pub fn baseline(mut self, id: &str) -> Self {
        self.baseline = Some(id.to_string());
        self
    }

    pub fn goal(mut self, text: &str, max_ratio: f64) -> Self {
        self.goal = Some(Goal {
            text: text.to_string(),
            max_ratio,
        });
        self
    }

    pub fn extra(mut self, name: &str, unit: &str, samples: Vec<f64>) -> Self {
        self.extras
            .push((name.to_string(), unit.to_string(), samples));
        self
    }

    pub fn note(mut self, note: &str) -> Self {
        self.note = note.to_string();
        self
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.samples)
    }
}

/// How a table is shown: figures with spread and ratios, or single values (map memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Figures,
    Values,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub id: String,
    pub title: String,
    pub kind: TableKind,
    /// Text shown above the table (markdown).
    pub intro: String,
    /// Show the per-round difference to the baseline (for ns figures where a fixed overhead
    /// sits in both sides of the ratio).
    pub show_delta: bool,
    pub rows: Vec<Row>,
}

impl Table {
    pub fn figures(id: &str, title: &str, intro: &str, rows: Vec<Row>) -> Self {
        Self {
            id: id.to_string(),
            title: title.to_string(),
            kind: TableKind::Figures,
            intro: intro.to_string(),
            show_delta: true,
            rows,
        }
    }
}

/// A part of the benchmark: measured tables, or an error saying why its rows are missing.
#[derive(Clone, Debug)]
pub struct Part {
    pub number: u8,
    pub title: String,
    /// How it was measured (markdown), shown before the tables.
    pub method: String,
    pub tables: Vec<Table>,
    /// Observations made while measuring (markdown bullets without the dash).
    pub notes: Vec<String>,
    /// Headline sentences for the report's closing note.
    pub summary: Vec<String>,
    /// Set when the part could not run: its rows are missing, and the report says so.
    pub error: Option<String>,
    /// For a missing part: the rows it will produce once it runs.
    pub expected_rows: Vec<String>,
    /// Wall-clock time of the part.
    pub secs: f64,
}

impl Part {
    pub fn new(number: u8, title: &str, method: &str) -> Self {
        Self {
            number,
            title: title.to_string(),
            method: method.to_string(),
            tables: Vec::new(),
            notes: Vec::new(),
            summary: Vec::new(),
            error: None,
            expected_rows: Vec::new(),
            secs: 0.0,
        }
    }

    pub fn missing(number: u8, title: &str, error: &str) -> Self {
        Self {
            error: Some(error.to_string()),
            ..Self::new(number, title, "")
        }
    }

    /// Parts 3 and 4 wait for `tests::lab`; their absence is expected, not a failure.
    pub fn awaits_lab(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.contains(crate::bench::lab_parts::NEEDS_LAB))
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.tables.iter().flat_map(|t| t.rows.iter())
    }

    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows().find(|r| r.id == id)
    }

    /// The row's value divided by its baseline's, round by round (both measured in the same
    /// round, so that a noisy moment affects both).
    pub fn ratios(&self, row: &Row) -> Option<Vec<f64>> {
        let base = self.row(row.baseline.as_deref()?)?;
        if base.samples.len() != row.samples.len() {
            return None;
        }
        Some(
            row.samples
                .iter()
                .zip(&base.samples)
                .map(|(a, b)| a / b)
                .collect(),
        )
    }

    /// Round-by-round ratio of row `a` to row `b` (any two rows of the part).
    pub fn ratio_between(&self, a: &str, b: &str) -> Option<Summary> {
        let (a, b) = (self.row(a)?, self.row(b)?);
        if a.samples.len() != b.samples.len() {
            return None;
        }
        let r: Vec<f64> = a
            .samples
            .iter()
            .zip(&b.samples)
            .map(|(x, y)| x / y)
            .collect();
        Summary::of(&r)
    }

    /// Median of a row's samples.
    pub fn median(&self, id: &str) -> Option<f64> {
        Some(self.row(id)?.summary()?.median)
    }

    /// The row's value minus its baseline's, round by round.
    pub fn deltas(&self, row: &Row) -> Option<Vec<f64>> {
        let base = self.row(row.baseline.as_deref()?)?;
        if base.samples.len() != row.samples.len() {
            return None;
        }
        Some(
            row.samples
                .iter()
                .zip(&base.samples)
                .map(|(a, b)| a - b)
                .collect(),
        )
    }

    /// Goal verdict: `Some(true)` when the median ratio meets the goal.
    pub fn goal_met(&self, row: &Row) -> Option<bool> {
        let goal = row.goal.as_ref()?;
        let r = Summary::of(&self.ratios(row)?)?;
        Some(r.median <= goal.max_ratio)
    }
}
