//! Synthetic balancing with noise copies (paper III-D, Table II) and class
//! weights (paper III-C).
//!
//! In each group, every class whose training count is below its target gets
//! copies of randomly chosen training images of that (group, class) cell until
//! it reaches the target; the loader adds fresh N(0, sigma^2) noise to the
//! normalized tensor each time a copy is drawn. Cells at or above the target
//! are left as they are (balancing only adds), and empty cells stay empty.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::rng::Rng;
use super::{CLASS_NAMES, NUM_CLASSES};

/// The paper's balancing settings (Table II).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    /// No balancing.
    S1,
    /// Every class to 2500 per group, sigma 0.03.
    S2,
    /// Every class to 2500 per group, sigma 0.05.
    S3,
    /// `[BCC,BKL,MEL,NV,unknown,VASC]` to `[4000,4000,4000,4000,2500,2500]`, sigma 0.03.
    S4,
    /// As S4 with sigma 0.05.
    S5,
}

const S4_TARGETS: [usize; NUM_CLASSES] = [4000, 4000, 4000, 4000, 2500, 2500];

impl Preset {
    /// All presets, in order.
    pub const ALL: [Preset; 5] = [Preset::S1, Preset::S2, Preset::S3, Preset::S4, Preset::S5];

    /// The preset's per-class targets (`None` for S1) and noise sigma.
    pub fn config(self) -> BalanceConfig {
        let (targets, sigma) = match self {
            Preset::S1 => (None, 0.0),
            Preset::S2 => (Some([2500; NUM_CLASSES]), 0.03),
            Preset::S3 => (Some([2500; NUM_CLASSES]), 0.05),
            Preset::S4 => (Some(S4_TARGETS), 0.03),
            Preset::S5 => (Some(S4_TARGETS), 0.05),
        };
        BalanceConfig {
            targets,
            sigma,
            scale: 1.0,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl FromStr for Preset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| anyhow::anyhow!("unknown balancing preset {s:?} (S1..S5)"))
    }
}

/// Balancing targets and noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BalanceConfig {
    /// Per-class target count in each group (canonical class order), or
    /// `None` for no balancing.
    pub targets: Option<[usize; NUM_CLASSES]>,
    /// Standard deviation of the noise added to copies (normalized units).
    pub sigma: f32,
    /// Multiplies the targets (they were set for ESFair's ~11k images).
    pub scale: f64,
}

impl BalanceConfig {
    /// A preset, optionally overriding its targets and sigma, with `scale`.
    pub fn new(
        preset: Preset,
        targets: Option<[usize; NUM_CLASSES]>,
        sigma: Option<f32>,
        scale: f64,
    ) -> Result<Self> {
        ensure!(
            scale.is_finite() && scale > 0.0,
            "--scale must be > 0 (got {scale})"
        );
        let mut c = preset.config();
        if let Some(t) = targets {
            c.targets = Some(t);
            if c.sigma == 0.0 && sigma.is_none() {
                bail!("custom targets need a noise sigma (or a preset S2..S5 to take it from)");
            }
        }
        if let Some(s) = sigma {
            ensure!(
                s.is_finite() && s >= 0.0,
                "noise sigma must be >= 0 (got {s})"
            );
            c.sigma = s;
        }
        c.scale = scale;
        Ok(c)
    }

    /// The scaled target of `class`, or `None` when not balancing.
    pub fn target(&self, class: usize) -> Option<usize> {
        self.targets
            .map(|t| (t[class] as f64 * self.scale).round() as usize)
    }
}

/// Parses `a,b,c,d,e,f` (six counts, canonical class order).
pub fn parse_targets(s: &str) -> Result<[usize; NUM_CLASSES]> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad balance targets {s:?}: {e}"))?;
    v.try_into().map_err(|v: Vec<usize>| {
        anyhow::anyhow!(
            "balance targets need {NUM_CLASSES} counts ({}), got {}",
            CLASS_NAMES.join(","),
            v.len()
        )
    })
}

/// One training slot of an epoch: which cache sample, and whether it is a
/// noise copy (gets fresh noise each time it is drawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Cache sample index.
    pub index: usize,
    /// True for a synthetic copy.
    pub noise: bool,
}

/// What balancing did to one (group, class) cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPlan {
    /// Group index.
    pub group: usize,
    /// Class index.
    pub class: usize,
    /// Training images of the cell.
    pub originals: usize,
    /// Noise copies added.
    pub copies: usize,
}

/// The training slots of an epoch (originals first, then copies; the loader
/// shuffles) and the noise sigma for copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancePlan {
    /// All slots.
    pub slots: Vec<Slot>,
    /// Noise standard deviation for copies.
    pub sigma: f32,
    /// Per-cell summary (every non-empty cell or cell with a target).
    pub cells: Vec<CellPlan>,
}

impl BalancePlan {
    /// Plain slots without copies or noise (validation, S1).
    pub fn plain(indices: &[usize]) -> BalancePlan {
        BalancePlan {
            slots: indices
                .iter()
                .map(|&index| Slot {
                    index,
                    noise: false,
                })
                .collect(),
            sigma: 0.0,
            cells: Vec::new(),
        }
    }

    /// Balances the training samples `train` of `cache`; copies are chosen
    /// deterministically from `seed`.
    pub fn new(cache: &Cache, train: &[usize], cfg: &BalanceConfig, seed: u64) -> BalancePlan {
        Self::new_by(
            cache.labels(),
            cache.groups(),
            cache.group_names().len(),
            train,
            cfg,
            seed,
        )
    }

    /// [`Self::new`] on plain label/group arrays.
    pub fn new_by(
        labels: &[usize],
        groups: &[usize],
        num_groups: usize,
        train: &[usize],
        cfg: &BalanceConfig,
        seed: u64,
    ) -> BalancePlan {
        let mut cell: Vec<Vec<usize>> = vec![Vec::new(); num_groups * NUM_CLASSES];
        for &i in train {
            cell[groups[i] * NUM_CLASSES + labels[i]].push(i);
        }
        let mut plan = BalancePlan::plain(train);
        plan.sigma = if cfg.targets.is_some() {
            cfg.sigma
        } else {
            0.0
        };
        for g in 0..num_groups {
            for c in 0..NUM_CLASSES {
                let members = &cell[g * NUM_CLASSES + c];
                let target = cfg.target(c).unwrap_or(0);
                let copies = if members.is_empty() {
                    0
                } else {
                    target.saturating_sub(members.len())
                };
                if members.is_empty() && copies == 0 && cfg.targets.is_none() {
                    continue;
                }
                // Rounds over a fresh permutation: every original is copied
                // k or k+1 times, chosen at random, never a few ones many times.
                let mut rng = Rng::from_parts(&[seed, g as u64, c as u64, 0xBA1A]);
                let mut pool = Vec::new();
                for _ in 0..copies {
                    if pool.is_empty() {
                        pool = members.clone();
                        rng.shuffle(&mut pool);
                    }
                    let index = pool.pop().expect("non-empty pool");
                    plan.slots.push(Slot { index, noise: true });
                }
                plan.cells.push(CellPlan {
                    group: g,
                    class: c,
                    originals: members.len(),
                    copies,
                });
            }
        }
        plan
    }

    /// Number of slots (samples per epoch).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the plan has no slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of noise copies.
    pub fn num_copies(&self) -> usize {
        self.slots.iter().filter(|s| s.noise).count()
    }

    /// Slots per class (originals + copies), e.g. for `auto` class weights.
    pub fn class_counts(&self, labels: &[usize]) -> [usize; NUM_CLASSES] {
        let mut c = [0; NUM_CLASSES];
        for s in &self.slots {
            c[labels[s.index]] += 1;
        }
        c
    }
}

/// The paper's class weights for [BCC, BKL, MEL, NV, unknown, VASC].
pub const PAPER_CLASS_WEIGHTS: [f32; NUM_CLASSES] = [15.0, 15.0, 15.0, 15.0, 1.0, 5.0];

/// Cross-entropy class weights: fixed values, or `auto` (inverse frequency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ClassWeights {
    /// Given weights (canonical class order).
    Fixed([f32; NUM_CLASSES]),
    /// `w_c = N / (C * n_c)` over the C classes present; 0 for absent ones.
    Auto,
    /// `sqrt(N / (C * n_c))`: half-way (in log space) between uniform and `Auto`. Inverse
    /// frequency trades much accuracy on HAM10000's NV majority for the rare classes' recall.
    Sqrt,
}

impl Default for ClassWeights {
    fn default() -> Self {
        ClassWeights::Fixed(PAPER_CLASS_WEIGHTS)
    }
}

impl FromStr for ClassWeights {
    type Err = anyhow::Error;
    /// `auto`, `paper`, or six comma-separated numbers.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => return Ok(ClassWeights::Auto),
            "sqrt" => return Ok(ClassWeights::Sqrt),
            "paper" => return Ok(ClassWeights::default()),
            _ => {}
        }
        let v: Vec<f32> = s
            .split(',')
            .map(|x| x.trim().parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("bad class weights {s:?}: {e} (use auto or 6 numbers)"))?;
        ensure!(
            v.iter().all(|w| w.is_finite() && *w >= 0.0),
            "class weights must be >= 0: {s:?}"
        );
        let a: [f32; NUM_CLASSES] = v.try_into().map_err(|v: Vec<f32>| {
            anyhow::anyhow!("class weights need {NUM_CLASSES} numbers, got {}", v.len())
        })?;
        Ok(ClassWeights::Fixed(a))
    }
}

impl ClassWeights {
    /// The weights for training data with `counts` samples per class.
    pub fn resolve(&self, counts: &[usize; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
        match self {
            ClassWeights::Fixed(w) => *w,
            ClassWeights::Sqrt => ClassWeights::Auto.resolve(counts).map(f32::sqrt),
            ClassWeights::Auto => {
                let n: usize = counts.iter().sum();
                let present = counts.iter().filter(|&&c| c > 0).count().max(1);
                counts.map(|c| {
                    if c == 0 {
                        0.0
                    } else {
                        (n as f64 / (present * c) as f64) as f32
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_presets_and_weights() {
        assert_eq!("s4".parse::<Preset>().unwrap(), Preset::S4);
        assert!("S6".parse::<Preset>().is_err());
        assert_eq!("auto".parse::<ClassWeights>().unwrap(), ClassWeights::Auto);
        assert_eq!("SQRT".parse::<ClassWeights>().unwrap(), ClassWeights::Sqrt);
        let w = ClassWeights::Sqrt.resolve(&[10, 20, 0, 50, 10, 10]);
        assert!((w[0] - 2f32.sqrt()).abs() < 1e-6 && w[2] == 0.0, "{w:?}");
        assert_eq!(
            "15,15,15,15,1,5".parse::<ClassWeights>().unwrap(),
            ClassWeights::Fixed(PAPER_CLASS_WEIGHTS)
        );
        assert!("1,2".parse::<ClassWeights>().is_err());
        assert!(parse_targets("1,2,3,4,5").is_err());
        assert_eq!(parse_targets("1,2,3,4,5,6").unwrap(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn auto_weights_are_inverse_frequency() {
        let w = ClassWeights::Auto.resolve(&[10, 20, 0, 50, 10, 10]);
        // N = 100 over 5 present classes: w = 100 / (5 n)
        let want = [2.0, 1.0, 0.0, 0.4, 2.0, 2.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }
}
