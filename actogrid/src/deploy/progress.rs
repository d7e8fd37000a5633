//! Progress of a deployment on a terminal: one bar per virtual node with
//! the runtimes asked, started, registered and failed. Off a terminal,
//! the `tracing` logs say the same things line by line.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::state::{VnState, lock};

pub(crate) struct Progress {
    bars: Option<MultiProgress>,
    shown: Mutex<Vec<(Arc<VnState>, ProgressBar)>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    pub(crate) fn new(enabled: bool) -> Progress {
        Progress {
            bars: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            shown: Mutex::new(Vec::new()),
            ticker: Mutex::new(None),
        }
    }

    /// The bars, when shown (what prints around them).
    pub(crate) fn bars(&self) -> Option<MultiProgress> {
        self.bars.clone()
    }

    /// Shows virtual node `vn`.
    pub(crate) fn add(&self, vn: &Arc<VnState>) {
        let Some(multi) = &self.bars else {
            return;
        };
        let bar = multi.add(ProgressBar::new(vn.expected.unwrap_or(0)));
        let style =
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} nodes  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(vn.name.clone());
        let mut shown = lock(&self.shown);
        shown.push((vn.clone(), bar));
        // One ticker draws every bar shown so far.
        let mut ticker = lock(&self.ticker);
        if let Some(t) = ticker.take() {
            t.abort();
        }
        *ticker = Some(tokio::spawn(tick(shown.clone())));
    }

    /// Leaves the bars as they are.
    pub(crate) fn finish(&self) {
        if let Some(t) = lock(&self.ticker).take() {
            t.abort();
        }
        for (vn, bar) in lock(&self.shown).iter() {
            draw(vn, bar);
            bar.abandon();
        }
    }
}

fn draw(vn: &VnState, bar: &ProgressBar) {
    let nodes = vn.node_count() as u64;
    if vn.expected.is_none() {
        bar.set_length(nodes.max(1));
    }
    bar.set_position(nodes);
    bar.set_message(message(vn));
}

/// What the bar of `vn` says after its count of nodes.
fn message(vn: &VnState) -> String {
    let c = &vn.counters;
    format!(
        "runtimes: {} asked, {}{} started, {} registered, {} failed",
        c.asked.load(Ordering::Relaxed),
        pending(vn),
        c.started.load(Ordering::Relaxed),
        c.registered.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
    )
}

/// `64 pending (Resources), ` while batch jobs wait in their queue, with
/// the scheduler's reasons once known; empty otherwise.
fn pending(vn: &VnState) -> String {
    let n = vn.counters.pending.load(Ordering::Relaxed);
    if n == 0 {
        return String::new();
    }
    let mut reasons: Vec<String> = lock(&vn.pending_reasons)
        .values()
        .filter(|r| !r.is_empty())
        .cloned()
        .collect();
    reasons.sort();
    reasons.dedup();
    if reasons.is_empty() {
        format!("{n} pending, ")
    } else {
        format!("{n} pending ({}), ", reasons.join(", "))
    }
}

async fn tick(bars: Vec<(Arc<VnState>, ProgressBar)>) {
    loop {
        for (vn, bar) in &bars {
            draw(vn, bar);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actogrid_descriptor::Spanned;
    use actogrid_descriptor::model::{DEFAULT_VN_TIMEOUT, VirtualNode, VnProperty};

    #[test]
    fn a_job_waiting_in_its_queue_shows_as_pending_with_its_reason() {
        let model = VirtualNode {
            name: Spanned::new("Workers".to_owned(), Default::default()),
            property: VnProperty::Multiple,
            timeout: DEFAULT_VN_TIMEOUT,
            wait_for_timeout: false,
            min_node_number: None,
            technical_services: Vec::new(),
            ft_service: None,
            file_transfer_deploy: None,
            file_transfer_retrieve: None,
            information: None,
        };
        let vn = VnState::new(&model, Some(64), Vec::new(), Vec::new());
        // What launch.rs does when a 64-task job is submitted, then seen
        // pending.
        vn.counters.asked.store(64, Ordering::Relaxed);
        vn.counters.pending.store(64, Ordering::Relaxed);
        assert_eq!(
            message(&vn),
            "runtimes: 64 asked, 64 pending, 0 started, 0 registered, 0 failed"
        );
        lock(&vn.pending_reasons).insert(0, "Resources".to_owned());
        assert_eq!(
            message(&vn),
            "runtimes: 64 asked, 64 pending (Resources), 0 started, 0 registered, 0 failed"
        );
    }
}
