//! Pull progress, per image and per layer: bars on a terminal (`berth run`, `berth pool
//! start`), plain log lines otherwise (and always in the daemon). The engine's events are
//! folded into `ImageProgress` (pure); observers only display it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What happens to one image pull.
#[derive(Debug, Clone)]
pub enum PullUpdate<'a> {
    Started {
        image: &'a str,
        attempt: u32,
    },
    Layer {
        image: &'a str,
        layer: &'a str,
        status: &'a str,
        current: Option<i64>,
        total: Option<i64>,
    },
    Retrying {
        image: &'a str,
        attempt: u32,
        error: &'a str,
        delay: Duration,
    },
    Done {
        image: &'a str,
        secs: f64,
    },
    Failed {
        image: &'a str,
        error: &'a str,
    },
}

pub trait PullObserver: Send + Sync {
    fn update(&self, u: &PullUpdate<'_>);
}

/// One layer as the engine last described it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerProgress {
    pub status: String,
    pub current: u64,
    pub total: u64,
}

impl LayerProgress {
    pub fn done(&self) -> bool {
        matches!(self.status.as_str(), "Pull complete" | "Already exists")
    }
}

/// The layers of one image pull and their byte counts.
#[derive(Debug, Clone, Default)]
pub struct ImageProgress {
    pub layers: BTreeMap<String, LayerProgress>,
}

impl ImageProgress {
    /// Folds one event in; returns true when the layer's status changed.
    /// Events without a layer id (e.g. "Pulling from x", "Digest: ...") carry no layer.
    pub fn apply(
        &mut self,
        layer: &str,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
    ) -> bool {
        if status.starts_with("Pulling from")
            || status.starts_with("Digest:")
            || status.starts_with("Status:")
        {
            return false;
        }
        let l = self.layers.entry(layer.to_string()).or_default();
        let changed = l.status != status;
        l.status = status.to_string();
        // Only downloads count bytes; extraction progress reuses the fields for other sizes.
        if status == "Downloading" {
            l.current = current.unwrap_or(0).max(0) as u64;
            if let Some(t) = total.filter(|t| *t > 0) {
                l.total = t as u64;
            }
        } else if matches!(
            status,
            "Download complete" | "Verifying Checksum" | "Extracting" | "Pull complete"
        ) {
            l.current = l.total;
        }
        changed
    }

    /// (layers done, layers, bytes downloaded, bytes known to download).
    pub fn summary(&self) -> (usize, usize, u64, u64) {
        let done = self.layers.values().filter(|l| l.done()).count();
        let cur = self.layers.values().map(|l| l.current).sum();
        let total = self.layers.values().map(|l| l.total).sum();
        (done, self.layers.len(), cur, total)
    }
}

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Plain log lines: each layer's status changes, and a byte summary every few seconds.
#[derive(Default)]
pub struct LogObserver {
    images: Mutex<HashMap<String, (ImageProgress, Instant)>>,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(5);

impl PullObserver for LogObserver {
    fn update(&self, u: &PullUpdate<'_>) {
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        match *u {
            PullUpdate::Started { image, attempt } => {
                images.insert(
                    image.to_string(),
                    (ImageProgress::default(), Instant::now()),
                );
                tracing::info!(image, attempt, "pulling image");
            }
            PullUpdate::Layer {
                image,
                layer,
                status,
                current,
                total,
            } => {
                let (p, last) = images
                    .entry(image.to_string())
                    .or_insert_with(|| (ImageProgress::default(), Instant::now()));
                if p.apply(layer, status, current, total) {
                    tracing::info!(image, layer, status, "pull layer");
                }
                if last.elapsed() >= SUMMARY_EVERY {
                    *last = Instant::now();
                    let (done, n, cur, tot) = p.summary();
                    tracing::info!(
                        image,
                        layers = format!("{done}/{n}"),
                        downloaded = format!("{}/{}", human_bytes(cur), human_bytes(tot)),
                        "pull progress"
                    );
                }
            }
            PullUpdate::Retrying {
                image,
                attempt,
                error,
                delay,
            } => {
                tracing::warn!(
                    image,
                    attempt,
                    error,
                    retry_in_s = delay.as_secs_f64(),
                    "pull failed; retrying"
                );
            }
            PullUpdate::Done { image, secs } => {
                let layers = images
                    .remove(image)
                    .map(|(p, _)| p.summary().1)
                    .unwrap_or(0);
                tracing::info!(image, layers, secs, "pulled image");
            }
            PullUpdate::Failed { image, error } => {
                images.remove(image);
                tracing::error!(image, error, "pull failed");
            }
        }
    }
}

/// The process-wide bar area. Log lines are written through it (`ProgressWriter`) so they
/// never tear a bar.
fn multi() -> &'static indicatif::MultiProgress {
    static M: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    M.get_or_init(indicatif::MultiProgress::new)
}

/// stderr for the log, printed above the bars.
pub struct ProgressWriter;

impl std::io::Write for ProgressWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Bars: one line per image (bytes and layers) and one per layer while it moves.
#[derive(Default)]
pub struct BarObserver {
    images: Mutex<HashMap<String, BarImage>>,
}

struct BarImage {
    progress: ImageProgress,
    bar: indicatif::ProgressBar,
    layers: HashMap<String, indicatif::ProgressBar>,
}

impl BarImage {
    fn clear(&self) {
        self.layers
            .values()
            .for_each(indicatif::ProgressBar::finish_and_clear);
        self.bar.finish_and_clear();
    }
}

impl PullObserver for BarObserver {
    fn update(&self, u: &PullUpdate<'_>) {
        use indicatif::{ProgressBar, ProgressStyle};
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        match *u {
            PullUpdate::Started { image, .. } => {
                let bar = multi().add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(image.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                if let Some(old) = images.insert(
                    image.to_string(),
                    BarImage {
                        progress: ImageProgress::default(),
                        bar,
                        layers: HashMap::new(),
                    },
                ) {
                    old.clear();
                }
            }
            PullUpdate::Layer {
                image,
                layer,
                status,
                current,
                total,
            } => {
                let Some(b) = images.get_mut(image) else {
                    return;
                };
                b.progress.apply(layer, status, current, total);
                let (done, n, cur, tot) = b.progress.summary();
                b.bar.set_length(tot);
                b.bar.set_position(cur);
                b.bar.set_message(format!("{done}/{n} layers"));
                let Some(l) = b.progress.layers.get(layer) else {
                    return;
                };
                let lb = b.layers.entry(layer.to_string()).or_insert_with(|| {
                    let lb = multi().insert_after(&b.bar, ProgressBar::new_spinner());
                    lb.set_style(
                        ProgressStyle::with_template("  {prefix} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    lb.set_prefix(layer.to_string());
                    lb
                });
                if l.done() {
                    lb.finish_and_clear();
                } else if l.total > 0 {
                    lb.set_message(format!(
                        "{} {}/{}",
                        l.status,
                        human_bytes(l.current),
                        human_bytes(l.total)
                    ));
                } else {
                    lb.set_message(l.status.clone());
                }
            }
            PullUpdate::Retrying {
                image,
                attempt,
                error,
                delay,
            } => {
                if let Some(b) = images.get(image) {
                    b.bar.set_message(format!(
                        "attempt {attempt} failed, retrying in {:.0} s: {error}",
                        delay.as_secs_f64()
                    ));
                }
            }
            PullUpdate::Done { image, secs } => {
                if let Some(b) = images.remove(image) {
                    let (_, n, _, tot) = b.progress.summary();
                    b.clear();
                    multi().suspend(|| {
                        eprintln!(
                            "pulled {image}: {n} layers, {} in {secs:.1} s",
                            human_bytes(tot)
                        )
                    });
                }
            }
            PullUpdate::Failed { image, error } => {
                if let Some(b) = images.remove(image) {
                    b.clear();
                }
                multi().suspend(|| eprintln!("pull of {image} failed: {error}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_fold_into_an_image_summary() {
        let mut p = ImageProgress::default();
        assert!(!p.apply("", "Pulling from x/y", None, None));
        assert!(p.apply("a", "Pulling fs layer", None, None));
        assert!(p.apply("b", "Already exists", None, None));
        assert!(p.apply("a", "Downloading", Some(10), Some(100)));
        assert!(
            !p.apply("a", "Downloading", Some(60), Some(100)),
            "bytes alone are not a status change"
        );
        assert_eq!(p.summary(), (1, 2, 60, 100));
        p.apply("a", "Download complete", None, None);
        p.apply("a", "Extracting", Some(5), Some(999));
        assert_eq!(
            p.summary(),
            (1, 2, 100, 100),
            "extraction sizes do not count as download"
        );
        p.apply("a", "Pull complete", None, None);
        assert_eq!(p.summary(), (2, 2, 100, 100));
        assert!(!p.apply("", "Digest: sha256:00", None, None));
        assert_eq!(p.layers.len(), 2);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(12_300_000), "12.3 MB");
    }
}
