//! ESFair formulas against hand-computed cases.

use derm_train::metrics::{
    EvalOptions, evaluate, fairness_score, latency_score, minority_group, spd,
};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn opts() -> EvalOptions {
    EvalOptions {
        class_names: names(&["BCC", "BKL", "MEL", "NV", "unknown", "VASC"]),
        group_names: names(&["a", "b", "c", "unknown"]),
        ..Default::default()
    }
}

/// (pred, label, group): group a 3/4 correct, b 1/2, c 5/5, unknown empty.
fn case() -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let rows = [
        (0, 0, 0),
        (1, 1, 0),
        (2, 2, 0),
        (0, 1, 0),
        (3, 3, 1),
        (0, 3, 1),
        (0, 0, 2),
        (0, 0, 2),
        (1, 1, 2),
        (3, 3, 2),
        (5, 5, 2),
    ];
    (
        rows.iter().map(|r| r.0).collect(),
        rows.iter().map(|r| r.1).collect(),
        rows.iter().map(|r| r.2).collect(),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn accuracy_groups_and_spd_clamp() {
    let (p, l, g) = case();
    let e = evaluate(&p, &l, &g, &opts()).unwrap();
    assert_eq!((e.n, e.correct), (11, 9));
    assert!(close(e.accuracy, 9.0 / 11.0));
    let accs: Vec<Option<f64>> = e.groups.iter().map(|g| g.accuracy).collect();
    assert_eq!(accs, [Some(0.75), Some(0.5), Some(1.0), None]);
    // Minority = b (2 samples; the empty group does not count).
    assert_eq!(e.minority_group.as_deref(), Some("b"));
    // SPD = (|0.75-0.5| + 0 + |1-0.5|) / 3 = 0.25 > 0.2, so fairness is 0,
    // not the negative (0.2-0.25)/0.2.
    assert!(close(e.spd.unwrap(), 0.25));
    assert_eq!(e.fairness, Some(0.0));
    assert_eq!(e.overall, None, "no latency given");
}

#[test]
fn excluded_group_and_minority_override() {
    let (p, l, g) = case();
    let mut o = opts();
    o.exclude_groups = names(&["c"]);
    let e = evaluate(&p, &l, &g, &o).unwrap();
    // SPD over a, b only: (0.25 + 0) / 2.
    assert!(close(e.spd.unwrap(), 0.125));
    assert!(close(e.fairness.unwrap(), 0.375));
    assert!(e.groups[2].excluded);
    assert!(
        close(e.accuracy, 9.0 / 11.0),
        "excluded groups still count in accuracy"
    );

    let mut o = opts();
    o.minority_group = Some("a".into());
    let e = evaluate(&p, &l, &g, &o).unwrap();
    // (0 + |0.5-0.75| + |1-0.75|) / 3 = 1/6; fairness (0.2 - 1/6) / 0.2 = 1/6.
    assert!(close(e.spd.unwrap(), 1.0 / 6.0));
    assert!((e.fairness.unwrap() - 1.0 / 6.0).abs() < 1e-12);

    // An excluded smallest group hands the minority to the next smallest.
    let mut o = opts();
    o.exclude_groups = names(&["b"]);
    let e = evaluate(&p, &l, &g, &o).unwrap();
    assert_eq!(e.minority_group.as_deref(), Some("a"));
    // (0 + 0.25) / 2
    assert!(close(e.spd.unwrap(), 0.125));
}

#[test]
fn balanced_accuracy_recall_confusion_and_latency() {
    let (p, l, g) = case();
    let mut o = opts();
    o.latency_s_per_100 = Some(5.0);
    o.exclude_groups = names(&["c"]);
    let e = evaluate(&p, &l, &g, &o).unwrap();
    let r = &e.per_class_recall;
    assert_eq!(r[0], Some(1.0));
    assert!(close(r[1].unwrap(), 2.0 / 3.0));
    assert_eq!(r[2], Some(1.0));
    assert!(close(r[3].unwrap(), 2.0 / 3.0));
    assert_eq!(r[4], None, "absent class has no recall");
    assert_eq!(r[5], Some(1.0));
    assert!(close(e.balanced_accuracy, 13.0 / 15.0));
    assert_eq!(e.per_class_support, [3, 3, 1, 3, 0, 1]);
    assert_eq!(e.confusion[1], [1, 2, 0, 0, 0, 0]);
    assert_eq!(e.confusion[3], [1, 0, 0, 2, 0, 0]);
    assert_eq!(e.groups[1].confusion[3], [1, 0, 0, 1, 0, 0]);
    let total: usize = e
        .groups
        .iter()
        .map(|g| g.confusion.iter().flatten().sum::<usize>())
        .sum();
    assert_eq!(total, 11);
    assert!(close(e.latency_score.unwrap(), 0.95));
    assert!(close(e.overall.unwrap(), (9.0 / 11.0 + 0.375 + 0.95) / 3.0));
}

#[test]
fn formula_helpers() {
    assert!(close(spd(&[0.9, 0.8, 0.7], 0.7), 0.3 / 3.0));
    assert!(close(fairness_score(0.0), 1.0));
    assert!(close(fairness_score(0.1), 0.5));
    assert!(close(fairness_score(0.2), 0.0));
    assert_eq!(fairness_score(0.35), 0.0);
    assert!(close(latency_score(0.0), 1.0));
    assert_eq!(latency_score(250.0), 0.0);
    // Fewest samples wins; ties go to the lower index; empty and
    // ineligible groups never win.
    assert_eq!(minority_group(&[5, 3, 3, 0], &[true; 4]), Some(1));
    assert_eq!(
        minority_group(&[5, 3, 3, 0], &[true, false, true, true]),
        Some(2)
    );
    assert_eq!(minority_group(&[0, 0], &[true, true]), None);
}

#[test]
fn bad_inputs_are_errors() {
    let (p, l, g) = case();
    let mut o = opts();
    o.exclude_groups = names(&["nope"]);
    assert!(
        evaluate(&p, &l, &g, &o)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    let mut o = opts();
    o.minority_group = Some("unknown".into());
    assert!(
        evaluate(&p, &l, &g, &o)
            .unwrap_err()
            .to_string()
            .contains("no sample")
    );
    assert!(evaluate(&p[..3], &l, &g, &opts()).is_err());
    let mut bad = p.clone();
    bad[0] = 6;
    assert!(
        evaluate(&bad, &l, &g, &opts())
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn confusion_pngs_are_written() {
    let (p, l, g) = case();
    let e = evaluate(&p, &l, &g, &opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = derm_train::plot::confusion_pngs(dir.path(), "val_", &e).unwrap();
    // all + the three non-empty groups
    assert_eq!(files.len(), 4);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
        assert!(bytes.len() > 1000, "{} looks empty", f.display());
    }
}

#[test]
fn metrics_command_scores_a_predictions_file() {
    use derm_train::cmd::metrics::{MetricsArgs, run};
    use derm_train::data::cache::{CacheWriter, SampleMeta};
    let dir = tempfile::tempdir().unwrap();
    let mut w = CacheWriter::create(dir.path().join("cache"), 2).unwrap();
    // (label, group): the case() rows again.
    let (p, l, g) = case();
    for i in 0..l.len() {
        let meta = SampleMeta {
            id: format!("img{i}"),
            source: String::new(),
            label: l[i],
            group: g[i].min(2),
            lesion: format!("l{i}"),
        };
        w.push(meta, &[i as u8; 12]).unwrap();
    }
    w.finish(names(&["a", "b", "c"]), vec![], "synthetic".into())
        .unwrap();
    let classes = ["BCC", "BKL", "MEL", "NV", "unknown", "VASC"];
    let mut csv = "id,pred\n".to_string();
    for (i, &pi) in p.iter().enumerate() {
        // Names and indices are both accepted.
        let pred = if i % 2 == 0 {
            classes[pi].to_string()
        } else {
            pi.to_string()
        };
        csv += &format!("img{i},{pred}\n");
    }
    let preds = dir.path().join("preds.csv");
    std::fs::write(&preds, &csv).unwrap();
    let args = |preds: std::path::PathBuf| MetricsArgs {
        cache: dir.path().join("cache"),
        predictions: preds,
        exclude_group: vec!["c".into()],
        minority_group: None,
        latency: None,
        out: dir.path().join("eval"),
    };
    run(args(preds)).unwrap();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("eval/evaluation.json")).unwrap(),
    )
    .unwrap();
    let r = &report["result"];
    assert_eq!(report["command"], "metrics");
    assert!(close(r["accuracy"].as_f64().unwrap(), 9.0 / 11.0));
    assert!(close(r["spd"].as_f64().unwrap(), 0.125));
    assert!(dir.path().join("eval/confusion_b.png").is_file());

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,pred\nimg0,NV\nnot_there,NV\n").unwrap();
    let e = run(args(bad)).unwrap_err().to_string();
    assert!(e.contains("not_there") && e.contains("line 3"), "{e}");
}
