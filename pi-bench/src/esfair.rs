//! The ESFair 2023 score of predictions on labelled images, with the same definitions as
//! `derm-train`'s metrics (so a model scores the same in training and here):
//!
//! - accuracy = correct / total; balanced accuracy = mean recall over the classes present;
//! - minority group `m` = the non-excluded, non-empty group with the fewest images (ties to
//!   the first in natural order);
//! - `SPD = sum_g |acc_g - acc_m| / N` over the N non-excluded, non-empty groups;
//! - fairness = `(0.2 - SPD) / 0.2`, 0 when `SPD > 0.2`;
//! - latency score = `1 - L / 100` (clamped to [0, 1]); overall = mean of accuracy, fairness
//!   and latency score.

use serde::Serialize;

/// SPD above which fairness scores 0.
pub const SPD_LIMIT: f64 = 0.2;

/// One group's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct GroupScore {
    /// Group name.
    pub name: String,
    /// Images.
    pub n: usize,
    /// Correctly classified.
    pub correct: usize,
    /// `correct / n` (absent when empty).
    pub accuracy: Option<f64>,
    /// Left out of SPD.
    pub excluded: bool,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// The ESFair table.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// Class names.
    pub classes: Vec<String>,
    /// Images scored.
    pub n: usize,
    /// Correct / total.
    pub accuracy: f64,
    /// Mean recall over the classes present.
    pub balanced_accuracy: f64,
    /// Recall per class (absent for a class with no image).
    pub per_class_recall: Vec<Option<f64>>,
    /// Images per class.
    pub per_class_support: Vec<usize>,
    /// Per group.
    pub groups: Vec<GroupScore>,
    /// The minority group's name.
    pub minority_group: Option<String>,
    /// Statistical parity difference.
    pub spd: Option<f64>,
    /// `(0.2 - SPD) / 0.2`, floored at 0.
    pub fairness: Option<f64>,
    /// `1 - L / 100`.
    pub latency_score: f64,
    /// Mean of accuracy, fairness and latency score.
    pub overall: Option<f64>,
    /// Accuracy of always predicting the most frequent class, for reference.
    pub majority_baseline_accuracy: f64,
}

/// `1 - L / 100`, clamped to [0, 1].
pub fn latency_score(l_seconds_per_100: f64) -> f64 {
    (1.0 - l_seconds_per_100 / 100.0).clamp(0.0, 1.0)
}

/// Scores `(true class, predicted class, group)` triples.
pub fn score(
    items: &[(usize, usize, usize)],
    classes: &[&str],
    groups: &[String],
    exclude: &[String],
    l_seconds_per_100: f64,
) -> Score {
    let nc = classes.len();
    let mut conf = vec![vec![vec![0usize; nc]; nc]; groups.len()];
    for &(t, p, g) in items {
        conf[g][t][p] += 1;
    }
    let mut support = vec![0usize; nc];
    let mut hits = vec![0usize; nc];
    let group_scores: Vec<GroupScore> = groups
        .iter()
        .zip(conf)
        .map(|(name, confusion)| {
            let n: usize = confusion.iter().flatten().sum();
            let correct: usize = (0..nc).map(|c| confusion[c][c]).sum();
            for c in 0..nc {
                support[c] += confusion[c].iter().sum::<usize>();
                hits[c] += confusion[c][c];
            }
            GroupScore {
                name: name.clone(),
                n,
                correct,
                accuracy: (n > 0).then(|| correct as f64 / n as f64),
                excluded: exclude.iter().any(|e| e == name),
                confusion,
            }
        })
        .collect();
    let n = items.len();
    let correct: usize = hits.iter().sum();
    let recall: Vec<Option<f64>> = (0..nc)
        .map(|c| (support[c] > 0).then(|| hits[c] as f64 / support[c] as f64))
        .collect();
    let present: Vec<f64> = recall.iter().flatten().copied().collect();
    let balanced = if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    };
    let eligible: Vec<&GroupScore> = group_scores
        .iter()
        .filter(|g| !g.excluded && g.n > 0)
        .collect();
    let minority = eligible.iter().min_by_key(|g| g.n).copied();
    let (spd, fairness) = match minority {
        Some(m) => {
            let am = m.accuracy.unwrap_or(0.0);
            let s = eligible
                .iter()
                .map(|g| (g.accuracy.unwrap_or(0.0) - am).abs())
                .sum::<f64>()
                / eligible.len() as f64;
            let f = if s > SPD_LIMIT {
                0.0
            } else {
                (SPD_LIMIT - s) / SPD_LIMIT
            };
            (Some(s), Some(f))
        }
        None => (None, None),
    };
    let accuracy = if n == 0 {
        0.0
    } else {
        correct as f64 / n as f64
    };
    let lat = latency_score(l_seconds_per_100);
    Score {
        classes: classes.iter().map(|c| c.to_string()).collect(),
        n,
        accuracy,
        balanced_accuracy: balanced,
        per_class_recall: recall,
        per_class_support: support.clone(),
        groups: group_scores.clone(),
        minority_group: minority.map(|m| m.name.clone()),
        spd,
        fairness,
        latency_score: lat,
        overall: fairness.map(|f| (accuracy + f + lat) / 3.0),
        majority_baseline_accuracy: if n == 0 {
            0.0
        } else {
            *support.iter().max().unwrap_or(&0) as f64 / n as f64
        },
    }
}

impl Score {
    /// Prints the ESFair table, per-class recall and per-group accuracy as markdown.
    pub fn print(&self) {
        let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        println!();
        println!("| ESFair            | value   |");
        println!("|-------------------|---------|");
        println!("| images            | {:>7} |", self.n);
        println!("| accuracy          | {:>7.4} |", self.accuracy);
        println!("| balanced accuracy | {:>7.4} |", self.balanced_accuracy);
        println!(
            "| majority baseline | {:>7.4} |",
            self.majority_baseline_accuracy
        );
        println!("| SPD               | {:>7} |", opt(self.spd, 4));
        println!("| fairness          | {:>7} |", opt(self.fairness, 4));
        println!("| latency score     | {:>7.5} |", self.latency_score);
        println!("| overall           | {:>7} |", opt(self.overall, 4));
        println!();
        println!("| class | images | recall |");
        println!("|-------|--------|--------|");
        for (i, c) in self.classes.iter().enumerate() {
            println!(
                "| {c} | {} | {} |",
                self.per_class_support[i],
                opt(self.per_class_recall[i], 4)
            );
        }
        println!();
        println!("| group | images | correct | accuracy | note |");
        println!("|-------|--------|---------|----------|------|");
        for g in &self.groups {
            let note = if g.excluded {
                "excluded"
            } else if self.minority_group.as_deref() == Some(g.name.as_str()) {
                "minority"
            } else {
                ""
            };
            println!(
                "| {} | {} | {} | {} | {note} |",
                g.name,
                g.n,
                g.correct,
                opt(g.accuracy, 4)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_table() {
        // Two groups: A 3/4 right, B 1/2 right (minority); class 0 recall 2/3, class 1 2/3.
        let items = [
            (0, 0, 0),
            (0, 0, 0),
            (1, 1, 0),
            (1, 0, 0),
            (0, 1, 1),
            (1, 1, 1),
        ];
        let groups = vec!["A".to_string(), "B".to_string()];
        let s = score(&items, &["x", "y"], &groups, &[], 1.0);
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((s.balanced_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.minority_group.as_deref(), Some("B"));
        // SPD = (|0.75 - 0.5| + 0) / 2 = 0.125; fairness = 0.075 / 0.2 = 0.375
        assert!((s.spd.unwrap() - 0.125).abs() < 1e-12);
        assert!((s.fairness.unwrap() - 0.375).abs() < 1e-12);
        assert!((s.latency_score - 0.99).abs() < 1e-12);
        assert_eq!(s.groups[0].confusion, vec![vec![2, 0], vec![1, 1]]);
        let excl = score(&items, &["x", "y"], &groups, &["B".into()], 1.0);
        assert_eq!(excl.spd, Some(0.0));
    }
}
