//! `experiment-report`: Table III from whatever cells of an experiment folder are finished:
//! per (setting, model), mean and standard deviation over folds of accuracy, balanced
//! accuracy, fairness, latency score and overall; a Fig. 6-like grouped bar plot and
//! Fig. 7-like per-group confusion matrices (summed over folds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::{CELLS_DIR, CellRecord, read_cell};
use crate::metrics::{Evaluation, latency_score};
use crate::plot;
use crate::report::Table;

/// Mean and sample standard deviation over folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1); `None` with a single value.
    pub std: Option<f64>,
    /// Values averaged.
    pub n: usize,
}

impl Stat {
    /// Of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(Stat { mean, std, n })
    }

    fn cell(s: Option<Stat>) -> String {
        match s {
            None => "-".into(),
            Some(Stat {
                mean, std: None, ..
            }) => format!("{mean:.3}"),
            Some(Stat {
                mean,
                std: Some(sd),
                ..
            }) => format!("{mean:.3} ± {sd:.3}"),
        }
    }
}

/// The latency measurement the report scores, from a `pi-bench --json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The pi-bench JSON it came from.
    pub source: String,
    /// Mean seconds per 100 images (the paper's L).
    pub l_seconds_per_100: f64,
    /// `1 - L / 100`.
    pub latency_score: f64,
}

impl Latency {
    /// Reads `l_seconds_per_100_images` from a pi-bench JSON report.
    pub fn from_pi_bench(path: &Path) -> Result<Latency> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --latency-json {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let l = v
            .get("l_seconds_per_100_images")
            .and_then(serde_json::Value::as_f64)
            .with_context(|| {
                format!(
                    "{}: no number l_seconds_per_100_images (is it a pi-bench --json report?)",
                    path.display()
                )
            })?;
        ensure!(
            l.is_finite() && l >= 0.0,
            "{}: l_seconds_per_100_images {l} must be >= 0",
            path.display()
        );
        Ok(Latency {
            source: path.display().to_string(),
            l_seconds_per_100: l,
            latency_score: latency_score(l),
        })
    }
}

/// One row of Table III: a (setting, model) pair over its finished folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Balancing setting.
    pub setting: String,
    /// Model column.
    pub model: String,
    /// Folds with a finished cell.
    pub folds: Vec<usize>,
    /// Accuracy.
    pub accuracy: Option<Stat>,
    /// Balanced accuracy.
    pub balanced_accuracy: Option<Stat>,
    /// ESFair fairness.
    pub fairness: Option<Stat>,
    /// Latency score (students only, from `--latency-json`).
    pub latency_score: Option<Stat>,
    /// Mean of accuracy, fairness and latency score, or of accuracy and fairness when no
    /// latency applies (see [`ExperimentReport::overall`]).
    pub overall: Option<Stat>,
}

/// `report.json` of an experiment folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    /// Finished cells read.
    pub cells: usize,
    /// The latency measurement scored, if any.
    pub latency: Option<Latency>,
    /// How `overall` is computed here.
    pub overall: String,
    /// One row per (setting, model), in cell order.
    pub rows: Vec<Row>,
    /// Images written (relative to the experiment folder).
    pub images: Vec<String>,
}

/// Reads every finished cell of experiment folder `dir`, in cell order.
pub fn read_cells(dir: &Path) -> Result<Vec<CellRecord>> {
    let cells = dir.join(CELLS_DIR);
    let entries = std::fs::read_dir(&cells)
        .with_context(|| format!("{} has no {CELLS_DIR}/ folder", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", cells.display()))?;
        if e.path().is_dir()
            && let Some(r) = read_cell(&e.path())?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    Ok(out)
}

fn is_student(model: &str) -> bool {
    model != "teacher"
}

/// Builds the report from `cells` (finished cells, in cell order).
pub fn build(cells: &[CellRecord], latency: Option<Latency>) -> ExperimentReport {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut by_key: BTreeMap<(String, String), Vec<&CellRecord>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.val.is_some()) {
        let k = (c.setting.clone(), c.model.clone());
        if !keys.contains(&k) {
            keys.push(k.clone());
        }
        by_key.entry(k).or_default().push(c);
    }
    let rows = keys
        .into_iter()
        .map(|k| {
            let cs = &by_key[&k];
            let vals = |f: &dyn Fn(&Evaluation) -> Option<f64>| -> Vec<f64> {
                cs.iter()
                    .filter_map(|c| c.val.as_ref().and_then(f))
                    .collect()
            };
            let lat = latency
                .as_ref()
                .filter(|_| is_student(&k.1))
                .map(|l| l.latency_score);
            let overall = vals(&|e: &Evaluation| {
                let fair = e.fairness?;
                Some(match lat {
                    Some(l) => (e.accuracy + fair + l) / 3.0,
                    None => (e.accuracy + fair) / 2.0,
                })
            });
            Row {
                folds: cs.iter().map(|c| c.fold).collect(),
                accuracy: Stat::of(&vals(&|e: &Evaluation| Some(e.accuracy))),
                balanced_accuracy: Stat::of(&vals(&|e: &Evaluation| Some(e.balanced_accuracy))),
                fairness: Stat::of(&vals(&|e: &Evaluation| e.fairness)),
                latency_score: lat.and_then(|l| Stat::of(&vec![l; cs.len()])),
                overall: Stat::of(&overall),
                setting: k.0,
                model: k.1,
            }
        })
        .collect();
    let overall = match &latency {
        Some(l) => format!(
            "mean of accuracy, fairness and latency score for the students (latency score {:.4} from {}); teachers, which do not run on the Pi, get the mean of accuracy and fairness",
            l.latency_score, l.source
        ),
        None => "mean of accuracy and fairness: no latency measurement given (--latency-json), so the latency score is left out".into(),
    };
    ExperimentReport {
        cells: cells.len(),
        latency,
        overall,
        rows,
        images: Vec::new(),
    }
}

impl ExperimentReport {
    /// The Table III-like markdown table.
    pub fn table(&self) -> Table {
        let mut t = Table::new([
            "setting",
            "model",
            "folds",
            "accuracy",
            "balanced accuracy",
            "fairness",
            "latency score",
            "overall",
        ]);
        for r in &self.rows {
            let folds: Vec<String> = r.folds.iter().map(ToString::to_string).collect();
            t.row([
                r.setting.clone(),
                r.model.clone(),
                folds.join(","),
                Stat::cell(r.accuracy),
                Stat::cell(r.balanced_accuracy),
                Stat::cell(r.fairness),
                if self.latency.is_some() {
                    Stat::cell(r.latency_score)
                } else {
                    "not measured".into()
                },
                Stat::cell(r.overall),
            ]);
        }
        t
    }

    /// The whole `report.md`.
    pub fn markdown(&self, dir: &Path) -> String {
        let mut s = format!(
            "# Experiment {}\n\nTable III-like summary of {} finished cells: mean ± sample standard deviation over folds \
             (one value: no deviation) of the best epoch's validation metrics.\n\n",
            dir.display(),
            self.cells
        );
        s.push_str(&self.table().to_string());
        s.push_str(&format!("\nOverall: {}.\n", self.overall));
        if !self.images.is_empty() {
            s.push_str("\nImages:\n\n");
            for i in &self.images {
                s.push_str(&format!("- [{i}]({i})\n"));
            }
        }
        s
    }
}

/// Writes `dir/report.md`, `dir/report.json`, the Fig. 6-like bar plots and the Fig. 7-like
/// confusion matrices; returns the report.
pub fn write(dir: &Path, latency: Option<Latency>) -> Result<ExperimentReport> {
    let cells = read_cells(dir)?;
    ensure!(
        !cells.is_empty(),
        "{}: no finished cell ({}/*/{})",
        dir.display(),
        CELLS_DIR,
        super::CELL_FILE
    );
    let mut rep = build(&cells, latency);
    let mut images: Vec<PathBuf> = Vec::new();
    images.extend(bar_plots(dir, &rep)?);
    images.extend(confusions(dir, &cells)?);
    rep.images = images
        .iter()
        .map(|p| {
            p.strip_prefix(dir)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    crate::report::write_json(&dir.join("report.json"), &rep)?;
    let md = dir.join("report.md");
    std::fs::write(&md, rep.markdown(dir)).with_context(|| format!("writing {}", md.display()))?;
    Ok(rep)
}

/// Reads one metric of a report row (for the per-metric plots).
type MetricOf = fn(&Row) -> Option<Stat>;

/// One grouped bar plot per metric: settings along x, one bar per model, std error bars.
fn bar_plots(dir: &Path, rep: &ExperimentReport) -> Result<Vec<PathBuf>> {
    let mut settings: Vec<String> = Vec::new();
    let mut models: Vec<String> = Vec::new();
    for r in &rep.rows {
        if !settings.contains(&r.setting) {
            settings.push(r.setting.clone());
        }
        if !models.contains(&r.model) {
            models.push(r.model.clone());
        }
    }
    let metrics: [(&str, &str, MetricOf); 4] = [
        ("overall", "overall", |r| r.overall),
        ("accuracy", "accuracy", |r| r.accuracy),
        ("balanced_accuracy", "balanced accuracy", |r| {
            r.balanced_accuracy
        }),
        ("fairness", "fairness", |r| r.fairness),
    ];
    let mut out = Vec::new();
    for (file, label, get) in metrics {
        let values: Vec<Vec<Option<(f64, f64)>>> = models
            .iter()
            .map(|m| {
                settings
                    .iter()
                    .map(|s| {
                        rep.rows
                            .iter()
                            .find(|r| &r.model == m && &r.setting == s)
                            .and_then(get)
                            .map(|st| (st.mean, st.std.unwrap_or(0.0)))
                    })
                    .collect()
            })
            .collect();
        let path = dir.join(format!("fig6_{file}.png"));
        plot::grouped_bars_png(
            &path,
            &format!("{label} (mean ± std over folds)"),
            &settings,
            &models,
            &values,
        )?;
        out.push(path);
    }
    Ok(out)
}

/// Per (setting, model): per-group confusion matrices summed over its folds, as PNGs in
/// `dir/confusion/<setting>-<model>/`.
fn confusions(dir: &Path, cells: &[CellRecord]) -> Result<Vec<PathBuf>> {
    let mut sums: Vec<((String, String), Evaluation)> = Vec::new();
    for c in cells {
        let Some(v) = &c.val else { continue };
        let key = (c.setting.clone(), c.model.clone());
        match sums.iter_mut().find(|(k, _)| *k == key) {
            None => sums.push((key, v.clone())),
            Some((_, acc)) => {
                ensure!(
                    acc.class_names == v.class_names && acc.groups.len() == v.groups.len(),
                    "cell {}: classes or groups differ from the other folds of {}-{}",
                    c.name,
                    key.0,
                    key.1
                );
                add_into(&mut acc.confusion, &v.confusion);
                acc.n += v.n;
                acc.correct += v.correct;
                for (g, h) in acc.groups.iter_mut().zip(&v.groups) {
                    add_into(&mut g.confusion, &h.confusion);
                    g.n += h.n;
                    g.correct += h.correct;
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((setting, model), mut e) in sums {
        // Accuracies of the summed matrices (the titles print them).
        e.accuracy = e.correct as f64 / e.n.max(1) as f64;
        for g in &mut e.groups {
            g.accuracy = (g.n > 0).then(|| g.correct as f64 / g.n as f64);
        }
        let sub = dir.join("confusion").join(format!("{setting}-{model}"));
        out.extend(plot::confusion_pngs(&sub, "", &e)?);
    }
    Ok(out)
}

fn add_into(acc: &mut [Vec<usize>], m: &[Vec<usize>]) {
    for (ra, rm) in acc.iter_mut().zip(m) {
        for (a, b) in ra.iter_mut().zip(rm) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_mean_and_sample_std() {
        let s = Stat::of(&[0.5, 0.7, 0.9]).unwrap();
        assert!((s.mean - 0.7).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(s.n, 3);
        assert_eq!(Stat::of(&[0.4]).unwrap().std, None);
        assert!(Stat::of(&[]).is_none());
    }
}
