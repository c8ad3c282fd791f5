//! The paper's latency protocol, shared by `pi-bench` and every baseline engine: the generated images (the same
//! generator and sizes as `pi-bench`) and the summary (L, latency score, per-image stats).

/// ESFair-like photo sizes (width, height): phone and dermatoscope shots.
pub const SIZES: [(usize, usize); 4] = [(600, 450), (1024, 768), (640, 480), (200, 150)];

/// Deterministic pseudo-random RGB8 images cycling through [`SIZES`] (identical to
/// `pi-bench`'s, so every engine sees the same pixels).
pub fn generate_images(n: usize, seed: u64) -> Vec<(usize, usize, Vec<u8>)> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            let (w, h) = SIZES[i % SIZES.len()];
            let px = (0..w * h * 3)
                .map(|_| {
                    // xorshift64*: cheap and reproducible across platforms.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect();
            (w, h, px)
        })
        .collect()
}

/// What one run measured.
pub struct Summary {
    /// Timed iterations.
    pub iterations: usize,
    /// Images per iteration.
    pub images: usize,
    /// L: mean seconds per 100 images.
    pub l_seconds_per_100: f64,
    /// `1 - L / 100`.
    pub latency_score: f64,
    /// Mean milliseconds per image.
    pub mean_ms: f64,
    /// Median milliseconds per image.
    pub p50_ms: f64,
    /// 90th percentile milliseconds per image.
    pub p90_ms: f64,
    /// 99th percentile milliseconds per image.
    pub p99_ms: f64,
    /// Images per second: images per iteration over the mean iteration's wall time.
    pub images_per_s: f64,
}

impl Summary {
    /// From each iteration's (wall) seconds and every image's milliseconds (sorted in
    /// place; with several workers, all of theirs together). Empty input gives NaN, not a
    /// panic.
    pub fn new(per_iteration_s: &[f64], per_image_ms: &mut [f64], images: usize) -> Self {
        let mean_iteration = per_iteration_s.iter().sum::<f64>() / per_iteration_s.len() as f64;
        let l = mean_iteration * 100.0 / images as f64;
        let mean_ms = per_image_ms.iter().sum::<f64>() / per_image_ms.len() as f64;
        per_image_ms.sort_by(f64::total_cmp);
        // Nearest rank on the sorted times.
        let pct = |p: f64| {
            let last = per_image_ms.len().saturating_sub(1);
            per_image_ms
                .get((last as f64 * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            iterations: per_iteration_s.len(),
            images,
            l_seconds_per_100: l,
            latency_score: 1.0 - l / 100.0,
            mean_ms,
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            p99_ms: pct(0.99),
            images_per_s: images as f64 / mean_iteration,
        }
    }

    /// Prints the lines `pi-bench` prints for the same quantities.
    pub fn print(&self) {
        println!("L (s / 100 img):  {:.4}", self.l_seconds_per_100);
        println!("latency score:    {:.5}", self.latency_score);
        println!("images / s:       {:.1}", self.images_per_s);
        println!("per image mean:   {:.3} ms", self.mean_ms);
        println!("per image p50:    {:.3} ms", self.p50_ms);
        println!("per image p90:    {:.3} ms", self.p90_ms);
        println!("per image p99:    {:.3} ms", self.p99_ms);
    }
}
