//! What libtorch this binary runs on, checked with a real computation.

use anyhow::{Result, ensure};
use tch::{Device, Kind, Tensor};

/// Facts about the linked libtorch.
#[derive(Debug, Clone)]
pub struct EnvReport {
    /// Intra-op threads libtorch will use.
    pub threads: i32,
    /// Whether a CUDA device is usable (always false for the CPU build).
    pub cuda: bool,
    /// Result of a fixed 2x2 matrix product, proving the kernels run.
    pub matmul_check: [f32; 4],
}

/// Runs a small matrix product on the CPU and reports the environment.
pub fn env_report() -> Result<EnvReport> {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).reshape([2, 2]);
    let c = a
        .matmul(&b)
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
        .reshape([4]);
    let v: Vec<f32> = Vec::<f32>::try_from(&c)?;
    ensure!(
        v.len() == 4,
        "libtorch returned {} values for a 2x2 product",
        v.len()
    );
    Ok(EnvReport {
        threads: tch::get_num_threads(),
        cuda: tch::Cuda::is_available(),
        matmul_check: [v[0], v[1], v[2], v[3]],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_multiplies_matrices() {
        let r = super::env_report().unwrap();
        assert_eq!(r.matmul_check, [19.0, 22.0, 43.0, 50.0]);
        assert!(r.threads >= 1);
    }
}
