//! Data: ingest (ESFair folders, CSV manifests), decoding, the preprocessed
//! cache, lesion-grouped splits, noise balancing and the batch loader.
//!
//! The flow is `prepare` (decode every image once into a [`cache::Cache`]),
//! then [`split::kfold`] on the cache, a [`balance::BalancePlan`] over the
//! training indices, and [`loader::Batches`] over that plan each epoch.

pub mod augment;
pub mod balance;
pub mod cache;
pub mod decode;
pub mod loader;
pub mod manifest;
pub mod prepare;
pub mod rng;
pub mod split;

/// The paper's six classes in their canonical order; a label is an index
/// into this list everywhere (cache, metrics, class weights, model outputs).
pub const CLASS_NAMES: [&str; 6] = ["BCC", "BKL", "MEL", "NV", "unknown", "VASC"];

/// Number of classes ([`CLASS_NAMES`]).
pub const NUM_CLASSES: usize = CLASS_NAMES.len();

/// The class index of `name`, matched case-insensitively against
/// [`CLASS_NAMES`] (manifests write `nv`, `Unknown`, ...).
pub fn class_index(name: &str) -> Option<usize> {
    let name = name.trim();
    CLASS_NAMES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_lookup_is_case_insensitive_and_strict() {
        assert_eq!(class_index("nv"), Some(3));
        assert_eq!(class_index(" Unknown "), Some(4));
        assert_eq!(class_index("VASC"), Some(5));
        assert_eq!(class_index("akiec"), None);
    }
}
