//! Lesion-grouped, class-stratified k-fold splits, and the held-out test mode.
//!
//! Several images can show one lesion (HAM10000: 8,077 images of 6,022
//! lesions); a lesion on both sides of a split leaks the answer, so whole
//! lesions are assigned to folds. Stratification is by the lesion's
//! `(class, group)` cell, which keeps every class (and every group inside
//! it) spread evenly over the folds.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::rng::Rng;

/// One fold: disjoint training and validation sample indices (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// Training sample indices.
    pub train: Vec<usize>,
    /// Validation sample indices.
    pub val: Vec<usize>,
}

/// `k` lesion-grouped, class-stratified folds of `cache`, deterministic from
/// `seed`: every sample is in exactly one `val`, and no lesion has samples in
/// both `train` and `val` of any fold.
pub fn kfold(cache: &Cache, k: usize, seed: u64) -> Result<Vec<Fold>> {
    let lesions: Vec<usize> = (0..cache.len()).map(|i| cache.lesion_index(i)).collect();
    kfold_by(cache.labels(), cache.groups(), &lesions, k, seed)
}

/// [`kfold`] on plain per-sample arrays; `lesions` are dense or sparse ids
/// (equal id = same lesion).
pub fn kfold_by(
    labels: &[usize],
    groups: &[usize],
    lesions: &[usize],
    k: usize,
    seed: u64,
) -> Result<Vec<Fold>> {
    let n = labels.len();
    ensure!(
        groups.len() == n && lesions.len() == n,
        "labels, groups, lesions lengths differ"
    );
    ensure!(k >= 2, "k must be at least 2 (got {k})");
    // members per lesion, in first-seen order for determinism
    let mut by_lesion: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in lesions.iter().enumerate() {
        by_lesion.entry(l).or_default().push(i);
    }
    ensure!(
        by_lesion.len() >= k,
        "k = {k} folds need at least {k} lesions, found {}",
        by_lesion.len()
    );
    // Stratum = the lesion's majority (label, group) cell.
    let mut strata: BTreeMap<(usize, usize), Vec<Vec<usize>>> = BTreeMap::new();
    for members in by_lesion.into_values() {
        let mut cells: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for &i in &members {
            *cells.entry((labels[i], groups[i])).or_default() += 1;
        }
        let key = cells
            .iter()
            .max_by_key(|(k, c)| (**c, std::cmp::Reverse(**k)))
            .unwrap()
            .0;
        strata.entry(*key).or_default().push(members);
    }
    let mut fold_of = vec![usize::MAX; n];
    let mut total = vec![0usize; k];
    for (key, mut ls) in strata {
        Rng::from_parts(&[seed, key.0 as u64, key.1 as u64, 0x5911]).shuffle(&mut ls);
        // Big lesions first so the greedy fill ends with small pieces.
        ls.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let mut here = vec![0usize; k];
        for members in ls {
            let f = (0..k).min_by_key(|&f| (here[f], total[f], f)).unwrap();
            here[f] += members.len();
            total[f] += members.len();
            for i in members {
                fold_of[i] = f;
            }
        }
    }
    Ok((0..k)
        .map(|f| {
            let (val, train) = (0..n).partition(|&i| fold_of[i] == f);
            Fold { train, val }
        })
        .collect())
}

/// A held-out test set: all of one cache trains, all of another tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    /// Indices into the training cache (all of them).
    pub train: Vec<usize>,
    /// Indices into the test cache (all of them).
    pub test: Vec<usize>,
    /// For each test group, its index among the training cache's groups
    /// (`None`: a group the training data never saw).
    pub test_group_in_train: Vec<Option<usize>>,
}

/// The held-out mode: checks that the two caches share class names and no
/// lesion id, and maps the test groups onto the training groups.
pub fn holdout(train: &Cache, test: &Cache) -> Result<Holdout> {
    ensure!(
        train.class_names() == test.class_names(),
        "class names differ between {} and {}",
        train.dir().display(),
        test.dir().display()
    );
    let train_lesions: HashSet<&str> = (0..train.len()).map(|i| train.lesion(i)).collect();
    let mut shared: Vec<&str> = (0..test.len())
        .map(|i| test.lesion(i))
        .filter(|l| train_lesions.contains(l))
        .collect();
    shared.sort_unstable();
    shared.dedup();
    if !shared.is_empty() {
        bail!(
            "{} lesion(s) appear in both the training cache {} and the test cache {} (first: {})",
            shared.len(),
            train.dir().display(),
            test.dir().display(),
            shared[..shared.len().min(5)].join(", ")
        );
    }
    Ok(Holdout {
        train: (0..train.len()).collect(),
        test: (0..test.len()).collect(),
        test_group_in_train: test
            .group_names()
            .iter()
            .map(|g| train.group_index(g))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_and_respect_lesions() {
        // 60 samples, 25 lesions (some with 4 images), 3 classes, 2 groups.
        let lesions: Vec<usize> = (0..60).map(|i| i % 25).collect();
        let labels: Vec<usize> = lesions.iter().map(|l| l % 3).collect();
        let groups: Vec<usize> = lesions.iter().map(|l| l % 2).collect();
        let folds = kfold_by(&labels, &groups, &lesions, 5, 1).unwrap();
        let mut seen = vec![0; 60];
        for f in &folds {
            for &i in &f.val {
                seen[i] += 1;
            }
            assert_eq!(f.train.len() + f.val.len(), 60);
            let vl: HashSet<_> = f.val.iter().map(|&i| lesions[i]).collect();
            assert!(f.train.iter().all(|&i| !vl.contains(&lesions[i])));
        }
        assert!(seen.iter().all(|&s| s == 1));
        assert_eq!(folds, kfold_by(&labels, &groups, &lesions, 5, 1).unwrap());
        assert_ne!(folds, kfold_by(&labels, &groups, &lesions, 5, 2).unwrap());
        assert!(kfold_by(&labels, &groups, &lesions, 1, 1).is_err());
        assert!(kfold_by(&labels, &groups, &lesions, 26, 1).is_err());
    }
}
