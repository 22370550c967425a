//! Printing results: an aligned text table for people, or one JSON object for scripts.

use std::fmt::Write as _;

use super::stats::Latency;

/// A text table: a title, column headers, rows of cells, and free-form notes below.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table with `title` and column `headers`.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Table::default()
        }
    }

    /// Appends a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Appends a line printed under the table.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// The table as text, columns padded; the first column left-aligned, others right.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    let _ = write!(s, "{cell:<w$}");
                } else {
                    let _ = write!(s, "  {cell:>w$}");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = format!("{}\n", self.title);
        out += &line(&self.headers);
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        out += &"-".repeat(total);
        out.push('\n');
        for row in &self.rows {
            out += &line(row);
            out.push('\n');
        }
        for n in &self.notes {
            out += n;
            out.push('\n');
        }
        out
    }
}

/// Prints `report` as pretty JSON when `json`, otherwise `table`.
pub fn emit<T: serde::Serialize>(report: &T, table: &Table, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table.render());
    }
    Ok(())
}

/// A rate with sensible precision: `41234`, `812.5`, `3.25`.
pub fn rate(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Milliseconds with three decimals.
pub fn ms(x: f64) -> String {
    format!("{x:.3}")
}

/// Bytes per second as decimal MB/s (10^6), the unit `dd` and minikeyvalue report.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// The cells `count, p50, p99, max` of a latency.
pub fn latency_cells(l: &Latency) -> Vec<String> {
    vec![
        l.count.to_string(),
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
    ]
}

/// KiB as MiB with one decimal.
pub fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let mut t = Table::new("T", &["case", "req/s"]);
        t.row(vec!["existing".into(), "41234".into()]);
        t.row(vec!["x".into(), "5".into()]);
        t.note("note");
        let text = t.render();
        assert_eq!(
            text,
            "T\ncase      req/s\n---------------\nexisting  41234\nx             5\nnote\n"
        );
        assert_eq!(rate(41234.4), "41234");
        assert_eq!(rate(812.54), "812.5");
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
    }
}
