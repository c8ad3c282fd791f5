//! `derm-codegen` command-line entry point.

fn main() {
    println!("derm-codegen {}", env!("CARGO_PKG_VERSION"));
}
