//! Helpers shared by the CLI tests (`tests/cli.rs`, and `tests/engine_cli` for the engine
//! binaries).

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh temporary folder for one test.
pub fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pi-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `bin` with `args`, without the variables in `env_remove`: (success, stdout, stderr).
pub fn run(bin: &str, args: &[&str], env_remove: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for k in env_remove {
        cmd.env_remove(k);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
