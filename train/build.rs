//! Lets the `derm-train` binary and tests find libtorch at run time without
//! `LD_LIBRARY_PATH`, by recording `$LIBTORCH/lib` as an rpath.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
