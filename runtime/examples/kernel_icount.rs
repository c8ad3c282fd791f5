//! Runs MobileNetV3-Small's layers (224x224, paper head with 6 classes)
//! through the kernels alone, `N` times, for instruction counting under
//! qemu: `kernel_icount N [NAME_PREFIX]` (see `scripts/icount.sh`).
//!
//! Without a prefix it runs every layer in order; with one, only the layers
//! whose name starts with it (e.g. `b5.` or `stem`).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = match args.next().map(|s| s.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: kernel_icount N [NAME_PREFIX]");
            std::process::exit(2);
        }
    };
    let prefix = args.next().unwrap_or_default();
    let mut layers: Vec<_> = common::layers(6)
        .into_iter()
        .filter(|l| l.name.starts_with(&prefix))
        .collect();
    if layers.is_empty() {
        eprintln!("no layer name starts with {prefix:?}");
        std::process::exit(2);
    }
    for _ in 0..n {
        for layer in &mut layers {
            layer.run();
        }
    }
    if std::env::var_os("KERNEL_ICOUNT_LIST").is_some() {
        for layer in &layers {
            println!("{} {} {:?}", layer.name, layer.op.macs(), layer.op);
        }
    }
}
