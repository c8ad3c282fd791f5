//! The ESFair 2023 scores, plus balanced accuracy, per-class recall and
//! per-group confusion matrices.
//!
//! - accuracy = correct / total (over every sample, excluded groups too);
//! - per-group accuracy `acc_g`;
//! - minority group `m` = the (non-excluded, non-empty) group with the fewest
//!   samples, ties to the lower index, unless given;
//! - `SPD = sum_g |acc_g - acc_m| / N` over the N non-excluded, non-empty
//!   groups (the minority included, contributing 0);
//! - fairness = `(0.2 - SPD) / 0.2`, and 0 when `SPD > 0.2` (the contest's
//!   scoring; the paper's eq. 11 is misprinted);
//! - latency score = `1 - L/100` (clamped to `[0, 1]`), `L` the mean seconds
//!   for 100 images over 10 runs;
//! - overall = mean of accuracy, fairness and latency score.

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::report::Table;

/// SPD above which fairness scores 0.
pub const SPD_LIMIT: f64 = 0.2;

/// What [`evaluate`] needs besides predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Class names (index = class).
    pub class_names: Vec<String>,
    /// Group names (index = group).
    pub group_names: Vec<String>,
    /// Force this group as the minority instead of the smallest one.
    pub minority_group: Option<String>,
    /// Groups left out of SPD and of the minority choice (e.g. `unknown`).
    pub exclude_groups: Vec<String>,
    /// Mean seconds per 100 images, if measured.
    pub latency_s_per_100: Option<f64>,
}

impl EvalOptions {
    /// Class and group names from `cache`; no exclusion, no latency.
    pub fn for_cache(cache: &crate::data::cache::Cache) -> Self {
        EvalOptions {
            class_names: cache.class_names().to_vec(),
            group_names: cache.group_names().to_vec(),
            ..Default::default()
        }
    }
}

/// One group's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupResult {
    /// Group name.
    pub name: String,
    /// Samples of the group.
    pub n: usize,
    /// Correct predictions.
    pub correct: usize,
    /// `correct / n`, `None` when the group has no sample.
    pub accuracy: Option<f64>,
    /// Whether the group is left out of SPD.
    pub excluded: bool,
    /// Confusion matrix, `[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Everything the ESFair protocol and our reports need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Class names.
    pub class_names: Vec<String>,
    /// Samples evaluated.
    pub n: usize,
    /// Correct predictions.
    pub correct: usize,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Mean recall over classes present in the labels.
    pub balanced_accuracy: f64,
    /// Recall per class (`None`: class absent from the labels).
    pub per_class_recall: Vec<Option<f64>>,
    /// Samples per class.
    pub per_class_support: Vec<usize>,
    /// Per-group results (all groups, in group order).
    pub groups: Vec<GroupResult>,
    /// The minority group's name (`None` if no group qualifies).
    pub minority_group: Option<String>,
    /// Statistical parity difference.
    pub spd: Option<f64>,
    /// Fairness score.
    pub fairness: Option<f64>,
    /// Mean seconds per 100 images, when given.
    pub latency_s_per_100: Option<f64>,
    /// Latency score.
    pub latency_score: Option<f64>,
    /// Mean of accuracy, fairness and latency score (needs all three).
    pub overall: Option<f64>,
    /// Whole-set confusion matrix, `[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// `sum_g |acc_g - acc_minority| / N` over `accs` (the N counted groups).
pub fn spd(accs: &[f64], minority_acc: f64) -> f64 {
    if accs.is_empty() {
        return 0.0;
    }
    accs.iter().map(|a| (a - minority_acc).abs()).sum::<f64>() / accs.len() as f64
}

/// `(0.2 - SPD) / 0.2`, and 0 when `SPD > 0.2`.
pub fn fairness_score(spd: f64) -> f64 {
    if spd > SPD_LIMIT {
        0.0
    } else {
        (SPD_LIMIT - spd) / SPD_LIMIT
    }
}

/// `1 - L/100` clamped to `[0, 1]`, `L` in seconds per 100 images.
pub fn latency_score(seconds_per_100: f64) -> f64 {
    (1.0 - seconds_per_100 / 100.0).clamp(0.0, 1.0)
}

/// The group with the fewest samples among those with `eligible[g]` and
/// `counts[g] > 0`; ties go to the lower index.
pub fn minority_group(counts: &[usize], eligible: &[bool]) -> Option<usize> {
    (0..counts.len())
        .filter(|&g| eligible[g] && counts[g] > 0)
        .min_by_key(|&g| (counts[g], g))
}

/// Scores predictions against labels. `preds`, `labels` are class indices,
/// `groups` group indices, all the same length.
pub fn evaluate(
    preds: &[usize],
    labels: &[usize],
    groups: &[usize],
    opts: &EvalOptions,
) -> Result<Evaluation> {
    let (n, nc, ng) = (labels.len(), opts.class_names.len(), opts.group_names.len());
    ensure!(
        preds.len() == n && groups.len() == n,
        "preds, labels and groups lengths differ"
    );
    ensure!(n > 0, "nothing to evaluate");
    ensure!(nc > 0 && ng > 0, "class and group names are required");
    for i in 0..n {
        ensure!(
            preds[i] < nc && labels[i] < nc && groups[i] < ng,
            "sample {i}: pred {} / label {} / group {} out of range ({nc} classes, {ng} groups)",
            preds[i],
            labels[i],
            groups[i]
        );
    }
    let find = |name: &str| opts.group_names.iter().position(|g| g == name);
    let mut excluded = vec![false; ng];
    for e in &opts.exclude_groups {
        match find(e) {
            Some(g) => excluded[g] = true,
            None => bail!("excluded group {e:?} is not one of {:?}", opts.group_names),
        }
    }
    let mut confusion = vec![vec![0usize; nc]; nc];
    let mut gconf = vec![vec![vec![0usize; nc]; nc]; ng];
    for i in 0..n {
        confusion[labels[i]][preds[i]] += 1;
        gconf[groups[i]][labels[i]][preds[i]] += 1;
    }
    let correct: usize = (0..nc).map(|c| confusion[c][c]).sum();
    let support: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let recall: Vec<Option<f64>> = (0..nc)
        .map(|c| (support[c] > 0).then(|| confusion[c][c] as f64 / support[c] as f64))
        .collect();
    let present: Vec<f64> = recall.iter().flatten().copied().collect();
    let balanced_accuracy = present.iter().sum::<f64>() / present.len() as f64;

    let groups_out: Vec<GroupResult> = (0..ng)
        .map(|g| {
            let m = &gconf[g];
            let gn: usize = m.iter().flatten().sum();
            let gc: usize = (0..nc).map(|c| m[c][c]).sum();
            GroupResult {
                name: opts.group_names[g].clone(),
                n: gn,
                correct: gc,
                accuracy: (gn > 0).then(|| gc as f64 / gn as f64),
                excluded: excluded[g],
                confusion: m.clone(),
            }
        })
        .collect();
    let counts: Vec<usize> = groups_out.iter().map(|g| g.n).collect();
    let eligible: Vec<bool> = excluded.iter().map(|e| !e).collect();
    let minority = match &opts.minority_group {
        Some(name) => {
            let g = find(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "minority group {name:?} is not one of {:?}",
                    opts.group_names
                )
            })?;
            ensure!(!excluded[g], "minority group {name:?} is also excluded");
            ensure!(
                counts[g] > 0,
                "minority group {name:?} has no sample in this evaluation"
            );
            Some(g)
        }
        None => minority_group(&counts, &eligible),
    };
    let (spd_v, fairness) = match minority {
        Some(m) => {
            let accs: Vec<f64> = groups_out
                .iter()
                .filter(|g| !g.excluded)
                .filter_map(|g| g.accuracy)
                .collect();
            let s = spd(&accs, groups_out[m].accuracy.expect("minority has samples"));
            (Some(s), Some(fairness_score(s)))
        }
        None => (None, None),
    };
    let accuracy = correct as f64 / n as f64;
    let lat = opts.latency_s_per_100.map(latency_score);
    let overall = match (fairness, lat) {
        (Some(f), Some(l)) => Some((accuracy + f + l) / 3.0),
        _ => None,
    };
    Ok(Evaluation {
        class_names: opts.class_names.clone(),
        n,
        correct,
        accuracy,
        balanced_accuracy,
        per_class_recall: recall,
        per_class_support: support,
        groups: groups_out,
        minority_group: minority.map(|m| opts.group_names[m].clone()),
        spd: spd_v,
        fairness,
        latency_s_per_100: opts.latency_s_per_100,
        latency_score: lat,
        overall,
        confusion,
    })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

impl Evaluation {
    /// Headline scores as a two-column table.
    pub fn summary_table(&self) -> Table {
        let mut t = Table::new(["metric", "value"]);
        t.row(["samples".into(), self.n.to_string()]);
        t.row(["accuracy".into(), pct(Some(self.accuracy))]);
        t.row([
            "balanced accuracy".into(),
            pct(Some(self.balanced_accuracy)),
        ]);
        t.row([
            "minority group".into(),
            self.minority_group.clone().unwrap_or("-".into()),
        ]);
        t.row(["SPD".into(), num(self.spd)]);
        t.row(["fairness".into(), num(self.fairness)]);
        if self.latency_s_per_100.is_some() {
            t.row(["latency s/100".into(), num(self.latency_s_per_100)]);
            t.row(["latency score".into(), num(self.latency_score)]);
            t.row(["overall".into(), num(self.overall)]);
        }
        t
    }

    /// Per-group accuracy table.
    pub fn group_table(&self) -> Table {
        let mut t = Table::new(["group", "n", "correct", "accuracy", "note"]);
        for g in &self.groups {
            let note = if g.excluded {
                "excluded"
            } else if Some(&g.name) == self.minority_group.as_ref() {
                "minority"
            } else {
                ""
            };
            t.row([
                g.name.clone(),
                g.n.to_string(),
                g.correct.to_string(),
                pct(g.accuracy),
                note.into(),
            ]);
        }
        t
    }

    /// Per-class recall table.
    pub fn class_table(&self) -> Table {
        let mut t = Table::new(["class", "support", "recall"]);
        for (c, name) in self.class_names.iter().enumerate() {
            t.row([
                name.clone(),
                self.per_class_support[c].to_string(),
                pct(self.per_class_recall[c]),
            ]);
        }
        t
    }
}
