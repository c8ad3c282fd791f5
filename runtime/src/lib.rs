//! `derm-runtime`: a `no_std`, allocation-free skin-lesion classifier for the
//! Raspberry Pi 4 (Cortex-A72) and any other target.
//!
//! The caller owns every buffer; nothing here allocates.
#![no_std]

pub mod kernels;
pub mod preprocess;
