//! What a run trains and validates on: `--train-on-val` adds exactly the validation images to
//! training, and `--select last` keeps the final epoch whatever it scores.

mod train_support;

use clap::Parser;
use derm_train::args::{BalanceArgs, DataArgs};
use derm_train::train::cli::{RunData, TrainArgs};
use derm_train::train::fit::Criterion;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    balance: BalanceArgs,
    #[command(flatten)]
    train: TrainArgs,
}

fn open(dir: &std::path::Path, extra: &[&str]) -> RunData {
    let mut args = vec![
        "run",
        "--cache",
        dir.to_str().unwrap(),
        "--k",
        "3",
        "--fold",
        "1",
    ];
    args.extend_from_slice(extra);
    let f = Flags::try_parse_from(args).expect("flags");
    RunData::open(&f.data, &f.balance, &f.train).expect("run data")
}

#[test]
fn train_on_val_adds_exactly_the_validation_images() {
    let dir = tempfile::tempdir().unwrap();
    let cache = train_support::tiny_cache(dir.path(), 30);
    let held_out = open(dir.path(), &[]);
    assert!(!held_out.val.is_empty());
    assert!(held_out.train.iter().all(|i| !held_out.val.contains(i)));
    assert_eq!(held_out.train.len() + held_out.val.len(), cache.len());

    let all = open(dir.path(), &["--train-on-val"]);
    assert_eq!(all.val, held_out.val, "still scored on the same images");
    assert!(all.val_in_train && !held_out.val_in_train);
    let mut want: Vec<usize> = (0..cache.len()).collect();
    want.sort_unstable();
    assert_eq!(all.train, want, "every image is trained on, once");

    // With --max-val only the kept validation images join.
    let some = open(dir.path(), &["--train-on-val", "--max-val", "3"]);
    assert_eq!(some.val.len(), 3);
    assert_eq!(some.train.len(), held_out.train.len() + 3);
}

#[test]
fn select_last_keeps_every_new_epoch() {
    let last: Criterion = "last".parse().unwrap();
    assert_eq!(last, Criterion::Last);
    assert_eq!(last.to_string(), "last");
    assert!(
        last.keeps(0.1, Some(0.9)),
        "a worse final epoch still replaces"
    );
    assert!(last.keeps(0.1, None));
    let overall = Criterion::Overall;
    assert!(!overall.keeps(0.1, Some(0.9)));
    assert!(overall.keeps(0.95, Some(0.9)));
    let err = "newest".parse::<Criterion>().unwrap_err().to_string();
    assert!(err.contains("newest") && err.contains("last"), "{err}");
}
