//! The `derm-codegen` command: writes code and weights for a valid model,
//! and names the file and the problem for a bad one.

use std::process::Command;

use derm_codegen::synthetic::SyntheticSpec;

fn codegen(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_derm-codegen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn writes_code_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    SyntheticSpec::tiny(4)
        .build()
        .unwrap()
        .write(&model)
        .unwrap();
    let out = dir.path().join("model.rs");
    let blob = dir.path().join("blob.bin");
    let o = codegen(&[
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--weights-out".as_ref(),
        blob.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let code = std::fs::read_to_string(&out).unwrap();
    assert!(
        code.contains(&*blob.to_string_lossy()),
        "the code must include the blob it wrote"
    );
    assert!(std::fs::metadata(&blob).unwrap().len() > 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("arena"));
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.rs");
    let missing = dir.path().join("missing.safetensors");
    let o = codegen(&[missing.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing.safetensors"), "{err}");

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = SyntheticSpec::tiny(4).build().unwrap().to_bytes().unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = codegen(&[truncated.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("truncated.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );
    assert!(!out.exists(), "no output for a bad model");
}
