//! What runtimes print, on the deployer's side: every line a runtime
//! writes on its standard output or error (its panics and log lines
//! included) reaches the deployment's [`LogSink`], is kept per runtime in a
//! bounded buffer ([`crate::Deployment::logs`]) and, unless told otherwise
//! ([`OutputOptions::print`]), printed on this process's own stdout or
//! stderr with the runtime's virtual node, host and pid in front:
//!
//! ```text
//! [Workers agh2:4123] solving 14 queens from column 3
//! ```
//!
//! The runtime's side — capturing its own output and sending it in
//! batches — is in `capture.rs`. It works the same whatever started the
//! runtime (this machine, ssh, a batch job, a lending peer): the runtime
//! forwards over its connection to the deployer, so no provider has to
//! collect anything.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use indicatif::MultiProgress;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::state::{Shared, lock};

/// Longest line kept, in bytes; a longer one is cut (and says so).
pub const MAX_LINE: usize = 4096;

/// Most lines one call of [`LogSink::lines`] may carry.
pub(crate) const MAX_BATCH: usize = 1024;

/// Gone runtimes whose output is still kept (the most recent ones): their
/// last lines often say why they went.
const KEPT_GONE: usize = 256;

/// Which stream a line was printed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error (log lines and panics go there).
    Stderr,
}

/// A line as a runtime sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintedLine {
    /// Where it was printed.
    pub stream: Stream,
    /// When the runtime read it, in microseconds since the Unix epoch (its
    /// machine's clock).
    pub unix_micros: u64,
    /// The line, without its end of line.
    pub text: String,
}

/// A line a runtime printed, with the runtime it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// The runtime's number in the deployment ([`crate::RuntimeSummary::id`]).
    pub runtime: u64,
    /// Its virtual node.
    pub vn: String,
    /// Its host, as it names itself.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Where it was printed.
    pub stream: Stream,
    /// When (by the runtime's clock).
    pub time: SystemTime,
    /// The line, without its end of line.
    pub text: String,
}

impl std::fmt::Display for OutputLine {
    /// `[Workers agh2:4123] text`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} {}:{}] {}", self.vn, self.host, self.pid, self.text)
    }
}

/// What a deployment does with its runtimes' output.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Print each line on this process's stdout or stderr (the stream it
    /// was printed on), prefixed `[vn host:pid]`; otherwise only keep it.
    pub print: bool,
    /// Lines kept per runtime (the latest).
    pub lines_per_runtime: usize,
    /// Bytes of text kept per runtime (the latest lines).
    pub bytes_per_runtime: usize,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            print: true,
            lines_per_runtime: 1000,
            bytes_per_runtime: 256 * 1024,
        }
    }
}

/// The kept output of one runtime.
#[derive(Default)]
struct Kept {
    lines: VecDeque<OutputLine>,
    bytes: usize,
}

/// Every runtime's kept output, and where it is shown.
pub(crate) struct Outputs {
    options: OutputOptions,
    kept: std::sync::Mutex<BTreeMap<u64, Kept>>,
    live: broadcast::Sender<OutputLine>,
    /// The progress bars, which printing must not tear.
    bars: std::sync::Mutex<Option<MultiProgress>>,
    /// Printing failed once (stdout closed): said once, then silent.
    broken: AtomicBool,
}

impl Outputs {
    pub(crate) fn new(options: OutputOptions) -> Outputs {
        Outputs {
            options,
            kept: std::sync::Mutex::new(BTreeMap::new()),
            live: broadcast::channel(1024).0,
            bars: std::sync::Mutex::new(None),
            broken: AtomicBool::new(false),
        }
    }

    /// Printing goes around `bars`.
    pub(crate) fn show_around(&self, bars: Option<MultiProgress>) {
        *lock(&self.bars) = bars;
    }

    /// Every kept line of runtime `runtime`, oldest first.
    pub(crate) fn of(&self, runtime: u64) -> Vec<OutputLine> {
        lock(&self.kept)
            .get(&runtime)
            .map(|k| k.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every kept line, oldest first.
    pub(crate) fn all(&self) -> Vec<OutputLine> {
        let mut all: Vec<OutputLine> = lock(&self.kept)
            .values()
            .flat_map(|k| k.lines.iter().cloned())
            .collect();
        all.sort_by_key(|l| l.time);
        all
    }

    pub(crate) fn follow(&self) -> broadcast::Receiver<OutputLine> {
        self.live.subscribe()
    }

    fn keep(&self, line: &OutputLine, gone: impl Fn(u64) -> bool) {
        let mut kept = lock(&self.kept);
        if !kept.contains_key(&line.runtime) {
            let gone_ids: Vec<u64> = kept.keys().copied().filter(|r| gone(*r)).collect();
            if gone_ids.len() >= KEPT_GONE {
                kept.remove(&gone_ids[0]);
            }
        }
        let k = kept.entry(line.runtime).or_default();
        k.bytes += line.text.len();
        k.lines.push_back(line.clone());
        while k.lines.len() > self.options.lines_per_runtime.max(1)
            || (k.bytes > self.options.bytes_per_runtime && k.lines.len() > 1)
        {
            if let Some(old) = k.lines.pop_front() {
                k.bytes -= old.text.len();
            }
        }
    }

    fn print(&self, lines: &[OutputLine]) {
        if !self.options.print || lines.is_empty() || self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut out = String::new();
        let mut err = String::new();
        for line in lines {
            let to = match line.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            to.push_str(&line.to_string());
            to.push('\n');
        }
        let write = || {
            let a = std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .and_then(|()| std::io::stdout().lock().flush());
            let b = std::io::stderr().lock().write_all(err.as_bytes());
            a.and(b)
        };
        let written = match &*lock(&self.bars) {
            Some(bars) => bars.suspend(write),
            None => write(),
        };
        if written.is_err() && !self.broken.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot print the runtimes' output any more; it is still kept");
        }
    }
}

impl Shared {
    /// Lines from runtime `runtime`: kept, followed, printed. `false` when
    /// the deployment does not know the runtime (it should stop sending).
    pub(crate) fn record_output(&self, runtime: u64, lines: Vec<PrintedLine>) -> bool {
        let st = lock(&self.state);
        let Some(record) = st.runtimes.get(&runtime) else {
            return false;
        };
        let vn = st.launches[record.launch as usize].vn.name.clone();
        let (host, pid) = (record.host.clone(), record.pid);
        let gone: std::collections::HashSet<u64> = st
            .runtimes
            .iter()
            .filter(|(_, r)| r.gone)
            .map(|(id, _)| *id)
            .collect();
        drop(st);
        let lines: Vec<OutputLine> = lines
            .into_iter()
            .take(MAX_BATCH)
            .map(|l| OutputLine {
                runtime,
                vn: vn.clone(),
                host: host.clone(),
                pid,
                stream: l.stream,
                time: SystemTime::UNIX_EPOCH + Duration::from_micros(l.unix_micros),
                text: cut(l.text),
            })
            .collect();
        for line in &lines {
            self.outputs.keep(line, |r| gone.contains(&r));
            let _ = self.outputs.live.send(line.clone());
        }
        self.outputs.print(&lines);
        true
    }
}

/// `text` cut to [`MAX_LINE`] bytes (on a character boundary): a runtime
/// is trusted no more than the network.
fn cut(mut text: String) -> String {
    if text.len() <= MAX_LINE {
        return text;
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" …[{dropped} bytes cut]"));
    text
}

/// The deployment's endpoint for its runtimes' output. Runtimes get its
/// proxy when they register ([`crate::Admission::logs`]).
#[derive(Debug)]
pub struct LogSink {
    deployment: u64,
}

#[crate::active(crate = crate, internal)]
impl LogSink {
    /// The sink of deployment `deployment` of this process.
    pub fn new(deployment: u64) -> Self {
        LogSink { deployment }
    }

    /// Lines printed by runtime `runtime` (its number from its
    /// admission). `false`: the deployment is over or does not know the
    /// runtime; stop sending.
    pub fn lines(&self, runtime: u64, lines: Vec<PrintedLine>) -> bool {
        super::registrar::find(self.deployment).is_some_and(|s| s.record_output(runtime, lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(runtime: u64, text: &str) -> OutputLine {
        OutputLine {
            runtime,
            vn: "Workers".into(),
            host: "h".into(),
            pid: 7,
            stream: Stream::Stderr,
            time: SystemTime::now(),
            text: text.into(),
        }
    }

    #[test]
    fn each_runtime_keeps_its_latest_lines_within_bounds() {
        let outputs = Outputs::new(OutputOptions {
            print: false,
            lines_per_runtime: 3,
            bytes_per_runtime: 10,
        });
        for i in 0..5 {
            outputs.keep(&line(1, &format!("l{i}")), |_| false);
        }
        let texts: Vec<String> = outputs.of(1).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["l2", "l3", "l4"]);
        outputs.keep(&line(1, "twelve bytes"), |_| false);
        let texts: Vec<String> = outputs.of(1).into_iter().map(|l| l.text).collect();
        assert_eq!(
            texts,
            ["twelve bytes"],
            "one line longer than the byte bound stays"
        );
        assert_eq!(line(1, "x").to_string(), "[Workers h:7] x");
    }

    #[test]
    fn only_the_latest_gone_runtimes_keep_their_output() {
        let outputs = Outputs::new(OutputOptions::default());
        for r in 0..(KEPT_GONE as u64 + 10) {
            outputs.keep(&line(r, "bye"), |_| true);
        }
        let kept = lock(&outputs.kept);
        assert_eq!(kept.len(), KEPT_GONE);
        assert_eq!(kept.keys().next(), Some(&10), "the oldest went first");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut(long);
        assert!(cut.len() < MAX_LINE + 40, "{}", cut.len());
        assert!(cut.ends_with("bytes cut]"), "{cut}");
    }
}
