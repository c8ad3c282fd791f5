//! Where the tests find real HAM10000 images: `DERM_DATA` if set, else
//! `../shared/data/ham10000` beside the workspace, else the 48-image fixture in
//! `train/tests/fixtures/ham10000` (a fresh clone). Each call says on stderr which one.

use std::path::PathBuf;

/// The data folder (with `metadata.csv` and `images/`), and whether it is the full data set.
pub fn ham_data() -> (PathBuf, bool) {
    let fixture = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ham10000"
    ));
    let chosen = match std::env::var_os("DERM_DATA") {
        Some(p) => PathBuf::from(p),
        None => {
            let shared = PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/ham10000"
            ));
            if shared.join("metadata.csv").is_file() {
                shared
            } else {
                fixture.clone()
            }
        }
    };
    assert!(
        chosen.join("metadata.csv").is_file(),
        "no metadata.csv in {} (DERM_DATA must name a HAM10000-layout folder)",
        chosen.display()
    );
    let full = chosen != fixture;
    eprintln!(
        "HAM10000 data: {} ({})",
        chosen.display(),
        if full { "data set" } else { "in-repo fixture" }
    );
    (chosen, full)
}
