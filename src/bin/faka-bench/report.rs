//! The report: one `Row` per line of the final table (throughput, p50 /
//! p99 / p999, errors by status, the ratios to the two ceilings and a
//! verdict), the `Goal`s of issues 6 and 29 held against a run's figures
//! and listed after the table (never a verdict: timing on a shared machine
//! is not correctness), and the number formats both use.

use crate::measure::Series;
use std::time::Duration;

/// One line of the final table. `failures: None` is a sub-row without a
/// verdict of its own.
pub struct Row {
    pub name: String,
    pub throughput: String,
    pub lat: Option<[Duration; 3]>,
    pub errors: String,
    /// The ratio to the trivial server in this process (its workers niced
    /// as faka's).
    pub ratio: Option<f64>,
    /// The same ratio to the outside trivial server (a process of its own,
    /// not niced).
    pub outside: Option<f64>,
    pub failures: Option<Vec<String>>,
    /// Issue 6's targets this row's figures are held against.
    pub goals: Vec<Goal>,
}

/// One of the performance targets (issues 6 and 29) and what a run
/// measured for it. Reported after the table; never a verdict (timing on a
/// shared machine is not correctness).
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    what: String,
    measured: f64,
    limit: f64,
    /// `measured >= limit` meets it; otherwise `measured < limit` does.
    at_least: bool,
    unit: &'static str,
}

impl Goal {
    pub fn at_least(
        what: impl Into<String>,
        measured: f64,
        limit: f64,
        unit: &'static str,
    ) -> Goal {
        Goal {
            what: what.into(),
            measured,
            limit,
            at_least: true,
            unit,
        }
    }

    pub fn below(what: impl Into<String>, measured: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what: what.into(),
            measured,
            limit,
            at_least: false,
            unit,
        }
    }

    fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.limit
        } else {
            self.measured < self.limit
        }
    }

    /// How far off a missed target is, as a factor (> 1).
    fn short_by(&self) -> f64 {
        let (a, b) = if self.at_least {
            (self.limit, self.measured)
        } else {
            (self.measured, self.limit)
        };
        a / b.max(1e-9)
    }

    fn figure(&self) -> String {
        let v = if self.measured >= 1000.0 {
            thousands(self.measured)
        } else if self.measured >= 10.0 {
            format!("{:.1}", self.measured)
        } else {
            format!("{:.2}", self.measured)
        };
        match self.unit {
            "" => v,
            u => format!("{v} {u}"),
        }
    }

    fn status(&self) -> String {
        if self.met() {
            "met".into()
        } else {
            format!("missed ({:.2}× off)", self.short_by())
        }
    }
}

/// Issue 6's targets against this run's figures, after the table. Not in
/// smoke runs: their sizes are not the targets' and their build is not
/// optimised.
pub fn print_goals(rows: &[Row], smoke: bool) {
    let goals: Vec<&Goal> = rows.iter().flat_map(|r| &r.goals).collect();
    if smoke || goals.is_empty() {
        return;
    }
    let cells: Vec<[String; 3]> = goals
        .iter()
        .map(|g| [g.what.clone(), g.figure(), g.status()])
        .collect();
    let w0 = cells
        .iter()
        .map(|c| c[0].chars().count())
        .max()
        .unwrap_or(0);
    let w1 = cells
        .iter()
        .map(|c| c[1].chars().count())
        .max()
        .unwrap_or(0);
    println!("\ntargets of issues 6 and 29 (timing on this machine; never a verdict):");
    for [what, figure, status] in cells {
        let pad0 = " ".repeat(w0 - what.chars().count());
        let pad1 = " ".repeat(w1 - figure.chars().count());
        println!("  {what}{pad0}  {pad1}{figure}  {status}");
    }
}

impl Row {
    pub fn goal(mut self, g: Goal) -> Row {
        self.goals.push(g);
        self
    }

    pub fn new(name: &str, throughput: String, series: &mut Series) -> Row {
        Row {
            name: name.into(),
            throughput,
            lat: series.percentiles(),
            errors: series.errors_text(),
            ratio: None,
            outside: None,
            failures: None,
            goals: Vec::new(),
        }
    }

    pub fn verdict(mut self, failures: Vec<String>) -> Row {
        self.failures = Some(failures);
        self
    }

    /// A sub-row that only reports a value (in the throughput column).
    pub fn info(name: &str, text: String) -> Row {
        Row {
            name: name.into(),
            throughput: text,
            lat: None,
            errors: String::new(),
            ratio: None,
            outside: None,
            failures: None,
            goals: Vec::new(),
        }
    }

    pub fn failed(name: &str, e: anyhow::Error) -> Row {
        Row {
            name: name.into(),
            throughput: "-".into(),
            lat: None,
            errors: "-".into(),
            ratio: None,
            outside: None,
            failures: Some(vec![format!("{e:#}")]),
            goals: Vec::new(),
        }
    }
}

pub fn rate(n: f64, elapsed: Duration, unit: &str) -> String {
    format!(
        "{} {unit}/s",
        thousands(n / elapsed.as_secs_f64().max(1e-9))
    )
}

pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn print_table(rows: &[Row], smoke: bool) {
    let header = [
        "scenario",
        "throughput",
        "p50",
        "p99",
        "p999",
        "errors",
        "ratio",
        "outside",
        "verdict",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let lat = |i: usize| r.lat.map(|l| ms(l[i])).unwrap_or_else(|| "-".into());
            let verdict = match &r.failures {
                None => String::new(),
                Some(f) if f.is_empty() => "ok".into(),
                Some(_) => "FAIL".into(),
            };
            [
                r.name.clone(),
                r.throughput.clone(),
                lat(0),
                lat(1),
                lat(2),
                r.errors.clone(),
                r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
                r.outside.map(|x| format!("{x:.2}")).unwrap_or_default(),
                verdict,
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let padded: Vec<String> = c
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (s, w))| {
                let pad = w - s.chars().count();
                if (1..=4).contains(&i) || i == 6 || i == 7 {
                    format!("{}{s}", " ".repeat(pad))
                } else {
                    format!("{s}{}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    println!();
    if smoke {
        println!("(smoke run: timings are not meaningful, only verdicts count)");
    }
    line(&header.map(String::from));
    line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        line(c);
    }
    for r in rows {
        for f in r.failures.iter().flatten() {
            println!("FAIL {}: {f}", r.name);
        }
    }
}

/// Says on stderr which scenario starts.
pub fn progress(name: &str) {
    eprintln!("faka-bench: running {name} …");
}

#[cfg(test)]
mod tests {
    use super::Goal;

    #[test]
    fn targets_are_met_or_missed_by_how_far_they_are_off() {
        let flow = Goal::at_least("flow", 7_970.4, 10_000.0, "orders/s");
        assert!(!flow.met());
        assert_eq!(flow.figure(), "7,970 orders/s");
        assert_eq!(flow.status(), "missed (1.25× off)");
        let p99 = Goal::below("p99", 14.3, 20.0, "ms");
        assert!(p99.met());
        assert_eq!(
            (p99.figure(), p99.status()),
            ("14.3 ms".into(), "met".into())
        );
        let flash = Goal::below("flash", 75.0, 50.0, "ms");
        assert_eq!(flash.status(), "missed (1.50× off)");
        // The limit itself: at least meets, below does not.
        assert!(Goal::at_least("ratio", 0.8, 0.8, "×").met());
        assert!(!Goal::below("import", 10.0, 10.0, "s").met());
        assert_eq!(Goal::at_least("ratio", 0.934, 0.8, "×").figure(), "0.93 ×");
    }
}
