//! The node's image pulls for its view (berth's `imagePulls` on `GET /node`): each pull
//! under way with its attempt and its layers and bytes so far, and the last few that
//! ended. Fed by the pull events ([`PullObserver`]), beside the observer that shows them.

use super::progress::{ImageProgress, PullObserver, PullUpdate};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How many ended pulls are kept (the oldest go first).
const ENDED_KEPT: usize = 16;

/// One image pull as the node view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullShown {
    pub image: String,
    /// `pulling`, `retrying` (after a transient error), `pulled` or `failed`.
    pub state: &'static str,
    pub attempt: u32,
    pub layers_done: usize,
    pub layers: usize,
    /// Bytes downloaded, and the sum of the layer sizes the registry announced so far.
    pub bytes: u64,
    pub total_bytes: u64,
    pub start_time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// The last error (retrying, failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The pulls, by image.
#[derive(Default)]
pub struct PullBoard {
    pulls: Mutex<BTreeMap<String, (ImageProgress, PullShown)>>,
}

impl PullBoard {
    /// Pulls under way first (by image), then the ended ones, latest first.
    pub fn snapshot(&self) -> Vec<PullShown> {
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PullShown> = pulls.values().map(|(_, s)| s.clone()).collect();
        out.sort_by(|a, b| {
            (
                a.end_time.is_some(),
                std::cmp::Reverse(a.end_time),
                &a.image,
            )
                .cmp(&(
                    b.end_time.is_some(),
                    std::cmp::Reverse(b.end_time),
                    &b.image,
                ))
        });
        out
    }
}

impl PullObserver for PullBoard {
    fn update(&self, u: &PullUpdate<'_>) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        match *u {
            PullUpdate::Started { image, attempt } => {
                let mut shown = fresh(image, attempt, now);
                // A retry keeps the pull's start.
                if let Some((_, old)) = pulls.get(image).filter(|(_, s)| s.end_time.is_none()) {
                    shown.start_time = old.start_time;
                }
                pulls.insert(image.to_string(), (ImageProgress::default(), shown));
            }
            PullUpdate::Layer {
                image,
                layer,
                status,
                current,
                total,
            } => {
                let (p, s) = pulls
                    .entry(image.to_string())
                    .or_insert_with(|| (ImageProgress::default(), fresh(image, 1, now)));
                p.apply(layer, status, current, total);
                s.state = "pulling";
                (s.layers_done, s.layers, s.bytes, s.total_bytes) = p.summary();
            }
            PullUpdate::Retrying { image, error, .. } => {
                if let Some((_, s)) = pulls.get_mut(image) {
                    s.state = "retrying";
                    s.message = Some(error.to_string());
                }
            }
            PullUpdate::Done { image, .. } | PullUpdate::Failed { image, .. } => {
                let failed = match *u {
                    PullUpdate::Failed { error, .. } => Some(error.to_string()),
                    _ => None,
                };
                if let Some((p, s)) = pulls.get_mut(image) {
                    (s.layers_done, s.layers, s.bytes, s.total_bytes) = p.summary();
                    s.state = if failed.is_some() { "failed" } else { "pulled" };
                    s.message = failed;
                    s.end_time = Some(now);
                    // The layers are no longer needed once ended.
                    *p = ImageProgress::default();
                }
                let mut ended: Vec<(DateTime<Utc>, String)> = pulls
                    .values()
                    .filter_map(|(_, s)| Some((s.end_time?, s.image.clone())))
                    .collect();
                if ended.len() > ENDED_KEPT {
                    ended.sort();
                    for (_, image) in &ended[..ended.len() - ENDED_KEPT] {
                        pulls.remove(image);
                    }
                }
            }
        }
    }
}

/// A pull that has just begun.
fn fresh(image: &str, attempt: u32, now: DateTime<Utc>) -> PullShown {
    PullShown {
        image: image.to_string(),
        state: "pulling",
        attempt,
        layers_done: 0,
        layers: 0,
        bytes: 0,
        total_bytes: 0,
        start_time: now,
        end_time: None,
        message: None,
    }
}

/// Pull events sent to each of several observers in turn (the display, the board).
pub struct Tee(pub Vec<Arc<dyn PullObserver>>);

impl PullObserver for Tee {
    fn update(&self, u: &PullUpdate<'_>) {
        for o in &self.0 {
            o.update(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_pull_shows_its_layers_then_its_end() {
        let b = PullBoard::default();
        b.update(&PullUpdate::Started {
            image: "r/a:1",
            attempt: 1,
        });
        b.update(&PullUpdate::Layer {
            image: "r/a:1",
            layer: "l1",
            status: "Downloading",
            current: Some(10),
            total: Some(40),
        });
        let s = &b.snapshot()[0];
        assert_eq!(
            (s.state, s.layers, s.bytes, s.total_bytes),
            ("pulling", 1, 10, 40)
        );
        b.update(&PullUpdate::Retrying {
            image: "r/a:1",
            attempt: 1,
            error: "connection reset",
            delay: Duration::from_secs(1),
        });
        assert_eq!(b.snapshot()[0].state, "retrying");
        b.update(&PullUpdate::Started {
            image: "r/a:1",
            attempt: 2,
        });
        b.update(&PullUpdate::Layer {
            image: "r/a:1",
            layer: "l1",
            status: "Pull complete",
            current: None,
            total: None,
        });
        b.update(&PullUpdate::Done {
            image: "r/a:1",
            secs: 1.0,
        });
        let s = &b.snapshot()[0];
        assert_eq!(
            (s.state, s.attempt, s.layers_done, s.message.as_deref()),
            ("pulled", 2, 1, None)
        );
        assert!(s.end_time.is_some());
        for i in 0..20 {
            let image = format!("r/b{i}");
            b.update(&PullUpdate::Failed {
                image: &image,
                error: "no",
            });
            b.update(&PullUpdate::Started {
                image: &image,
                attempt: 1,
            });
            b.update(&PullUpdate::Failed {
                image: &image,
                error: "not found",
            });
        }
        let all = b.snapshot();
        assert_eq!(all.len(), ENDED_KEPT);
        assert_eq!(all[0].state, "failed");
        assert_eq!(all[0].message.as_deref(), Some("not found"));
    }
}
