//! derm-runtime's C ABI as a static library.
//!
//! Re-exports every function of [`derm_runtime::ffi`] (declared in
//! `runtime/include/derm_runtime.h`); build with
//! `cargo build --release -p derm-capi` and link `libderm_capi.a`.
//! See `examples/c` at the workspace root for a complete C program.

pub use derm_runtime::ffi::*;
