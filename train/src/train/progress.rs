//! Progress display: an indicatif bar with loss, images/s and ETA on a terminal, and plain
//! periodic log lines otherwise (runs under `nohup` write a readable log instead of
//! carriage-return noise).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one epoch.
#[derive(Debug)]
pub struct EpochProgress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    images: u64,
    start: Instant,
    log_every: u64,
}

impl EpochProgress {
    /// A display for `total` steps labelled `label`; `enabled = false` prints nothing.
    pub fn new(label: &str, total: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_owned());
            b
        });
        let log_every = if enabled && bar.is_none() {
            (total / 10).max(1)
        } else {
            0
        };
        Self {
            bar,
            label: label.to_owned(),
            total,
            done: 0,
            images: 0,
            start: Instant::now(),
            log_every,
        }
    }

    /// Images per second since the start of the epoch.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Records one step of `images` images with running mean loss `loss`.
    pub fn step(&mut self, images: u64, loss: f64) {
        self.done += 1;
        self.images += images;
        let ips = self.images_per_s();
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.4} {ips:.1} img/s"));
            b.inc(1);
        } else if self.log_every > 0
            && (self.done.is_multiple_of(self.log_every) || self.done == self.total)
        {
            let left = self.total.saturating_sub(self.done) as f64;
            let eta = left * self.start.elapsed().as_secs_f64() / self.done as f64;
            eprintln!(
                "{} step {}/{} loss {loss:.4} {ips:.1} img/s eta {:.0}s",
                self.label, self.done, self.total, eta
            );
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
