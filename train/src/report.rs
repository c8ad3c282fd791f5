//! JSON reports and plain-text tables shared by every command.
//!
//! Each command writes one JSON report ([`write_report`]: the command name,
//! the crate version, a timestamp and the command's own result) and prints
//! the same numbers as [`Table`]s.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

/// A text table printed as aligned Markdown (readable in a terminal and
/// pasteable into docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(header: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells print empty, extra cells are kept).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ncol = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let cell = |r: &[String], c: usize| r.get(c).map(String::as_str).unwrap_or("").to_string();
        let mut width = vec![3usize; ncol];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (c, w) in width.iter_mut().enumerate() {
                *w = (*w).max(cell(r, c).chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, r: &[String]| -> fmt::Result {
            write!(f, "|")?;
            for (c, w) in width.iter().enumerate() {
                let s = cell(r, c);
                // Numbers right-aligned, text left-aligned.
                if c > 0
                    && s.chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_digit() || ch == '-')
                {
                    write!(f, " {s:>w$} |")?;
                } else {
                    write!(f, " {s:<w$} |")?;
                }
            }
            writeln!(f)
        };
        line(f, &self.header)?;
        write!(f, "|")?;
        for w in &width {
            write!(f, "{}|", "-".repeat(w + 2))?;
        }
        writeln!(f)?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// Writes `value` as pretty JSON to `path` atomically (temporary file +
/// rename), creating the parent folder.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize + ?Sized> {
    command: &'a str,
    derm_train_version: &'a str,
    created_unix_s: u64,
    result: &'a T,
}

/// Writes a command's report: `{command, derm_train_version, created_unix_s,
/// result}` with `result` = `body`.
pub fn write_report<T: Serialize + ?Sized>(path: &Path, command: &str, body: &T) -> Result<()> {
    let created_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    write_json(
        path,
        &Envelope {
            command,
            derm_train_version: env!("CARGO_PKG_VERSION"),
            created_unix_s,
            result: body,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["name", "n"]);
        t.row(["a", "5"]).row(["long name", "1234"]);
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{s}");
        assert!(lines[3].contains("| long name | 1234 |"), "{s}");
    }
}
