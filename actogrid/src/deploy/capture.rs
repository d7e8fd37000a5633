//! The runtime's side of output forwarding: a runtime started by a
//! deployer replaces its own standard output and error with pipes (`dup2`)
//! before anything is printed. A thread per pipe reads lines, writes every
//! byte on to the original stream as well (so the tail a provider keeps —
//! a process's stderr, a job's error file — still explains an exit), and
//! queues the lines; once the runtime is admitted, a task sends them to the
//! deployment's [`LogSink`] in batches. Panics are caught by a hook that
//! queues the message with its location and, off the async threads (where
//! a panic may end the process), waits briefly for it to leave.
//!
//! Everything is bounded: lines are cut at [`MAX_LINE`] bytes; more than
//! [`RATE`] lines a second (after a burst of [`BURST`]) are counted, not
//! sent; while the deployer cannot be reached, the latest [`QUEUE_LINES`]
//! lines (at most [`QUEUE_BYTES`]) wait and older ones are counted as lost.
//! What was not sent is said in a line of its own.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::output::{LogSinkProxy, MAX_LINE, PrintedLine, Stream};
use super::state::lock;

/// Sustained lines a second a runtime may forward.
const RATE: f64 = 1000.0;
/// Lines forwarded at once before the rate applies.
const BURST: f64 = 2000.0;
/// Lines that wait while the deployer cannot be reached.
const QUEUE_LINES: usize = 2000;
/// Bytes of text that wait while the deployer cannot be reached.
const QUEUE_BYTES: usize = 1024 * 1024;
/// Most lines in one call to the sink (below its own limit).
const BATCH_LINES: usize = 256;
/// Most bytes of text in one call to the sink.
const BATCH_BYTES: usize = 256 * 1024;
/// How long lines gather before a batch leaves: a burst of lines goes in
/// one call, a single line is late by this much at most.
const GATHER: Duration = Duration::from_millis(20);

fn capture() -> &'static OnceLock<Arc<Capture>> {
    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
    &CAPTURE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    /// Not admitted yet: lines wait.
    NotYet,
    On,
    /// The deployer takes no lines: none are kept.
    Off,
}

struct Queue {
    lines: VecDeque<(u64, PrintedLine)>,
    bytes: usize,
    next_seq: u64,
    /// Lines dropped because the queue was full.
    lost: u64,
    /// Lines dropped by the rate limit, not yet said.
    limited: u64,
    tokens: f64,
    refilled: Instant,
    forwarding: Forwarding,
}

struct Capture {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// Sequence number below which every line has left.
    delivered: Mutex<u64>,
    delivery: Condvar,
    /// The original standard output and error (the streams are pipes
    /// now), for panics and to be put back at the end.
    stdout: Arc<File>,
    stderr: Arc<File>,
    /// The threads reading the pipes.
    readers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Replaces standard output and error with pipes read by this process, once.
/// Does nothing when the pipes cannot be made (the output then goes where
/// it went).
pub(crate) fn start() {
    if capture().get().is_some() {
        return;
    }
    let originals = (
        std::io::stdout().as_fd().try_clone_to_owned().ok(),
        std::io::stderr().as_fd().try_clone_to_owned().ok(),
    );
    let pipes = (
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC),
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC),
    );
    let ((Ok((out_r, out_w)), Ok((err_r, err_w))), (Some(out), Some(err))) = (pipes, originals)
    else {
        return;
    };
    let _ = std::io::stdout().flush();
    if rustix::stdio::dup2_stdout(&out_w).is_err() || rustix::stdio::dup2_stderr(&err_w).is_err() {
        // Put back whatever was replaced.
        let _ = rustix::stdio::dup2_stdout(&out);
        let _ = rustix::stdio::dup2_stderr(&err);
        return;
    }
    drop((out_w, err_w));
    let stdout = Arc::new(File::from(out));
    let stderr = Arc::new(File::from(err));
    let c = Arc::new(Capture {
        queue: Mutex::new(Queue {
            lines: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            lost: 0,
            limited: 0,
            tokens: BURST,
            refilled: Instant::now(),
            forwarding: Forwarding::NotYet,
        }),
        wake: tokio::sync::Notify::new(),
        delivered: Mutex::new(0),
        delivery: Condvar::new(),
        stdout: stdout.clone(),
        stderr: stderr.clone(),
        readers: Mutex::new(Vec::new()),
    });
    if capture().set(c.clone()).is_err() {
        return;
    }
    let readers = [
        (out_r, stdout, Stream::Stdout),
        (err_r, stderr, Stream::Stderr),
    ];
    for (pipe, original, stream) in readers {
        let (queue, echo) = (c.clone(), original.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("actogrid-{stream:?}").to_lowercase())
            .spawn(move || read_lines(pipe, &echo, stream, &queue));
        match spawned {
            Ok(reader) => lock(&c.readers).push(reader),
            // Nobody reads that pipe: give the stream back its original.
            Err(_) => restore(stream, &original),
        }
    }
    let hooked = c;
    std::panic::set_hook(Box::new(move |info| on_panic(&hooked, info)));
}

fn restore(stream: Stream, original: &File) {
    let _ = match stream {
        Stream::Stdout => rustix::stdio::dup2_stdout(original.as_fd()),
        Stream::Stderr => rustix::stdio::dup2_stderr(original.as_fd()),
    };
}

/// Puts the original standard output and error back and waits (up to a
/// second) until what was written to the pipes has gone on to them: called
/// before the process exits, so that its last words are not lost.
pub(crate) fn finish() {
    let Some(c) = capture().get() else {
        return;
    };
    let _ = std::io::stdout().flush();
    // The pipes' last write ends close: their readers see the end.
    restore(Stream::Stdout, &c.stdout);
    restore(Stream::Stderr, &c.stderr);
    let readers = std::mem::take(&mut *lock(&c.readers));
    let deadline = Instant::now() + Duration::from_secs(1);
    for reader in readers {
        // A child of the runtime may still hold a pipe: do not wait for it.
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if reader.is_finished() {
            let _ = reader.join();
        }
    }
}

/// Reads `pipe` until it closes: every byte goes on to `original`, every
/// line (cut at [`MAX_LINE`]) to the queue.
fn read_lines(pipe: OwnedFd, original: &File, stream: Stream, c: &Capture) {
    let mut pipe = File::from(pipe);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = 0usize;
    loop {
        let n = match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let _ = (&*original).write_all(&chunk[..n]);
        for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&body[..body.len().min(room)]);
            cut += body.len().saturating_sub(room);
            if ends {
                c.push(stream, text_of(&line, cut));
                line.clear();
                cut = 0;
            }
        }
    }
    if !line.is_empty() {
        c.push(stream, text_of(&line, cut));
    }
}

fn text_of(line: &[u8], cut: usize) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if cut > 0 {
        text.push_str(&format!(" …[{cut} bytes cut]"));
    }
    text
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Capture {
    /// Queues a line, within the rate and the queue's bounds.
    fn push(&self, stream: Stream, text: String) {
        let mut q = lock(&self.queue);
        let now = Instant::now();
        let elapsed = now.duration_since(q.refilled).as_secs_f64();
        q.tokens = (q.tokens + elapsed * RATE).min(BURST);
        q.refilled = now;
        if q.forwarding == Forwarding::Off {
            return;
        }
        if q.tokens < 1.0 {
            // Counted; the next batch says how many.
            q.limited += 1;
            drop(q);
            self.wake.notify_one();
            return;
        }
        q.tokens -= 1.0;
        q.add(stream, text);
        drop(q);
        self.wake.notify_one();
    }

    /// The next batch to send, oldest first, after lines saying what was
    /// lost or held back since the last one.
    fn batch(&self) -> (Vec<PrintedLine>, u64) {
        let mut q = lock(&self.queue);
        let mut batch = Vec::new();
        if q.lost > 0 {
            batch.push(PrintedLine {
                stream: Stream::Stderr,
                unix_micros: now_micros(),
                text: format!(
                    "[actogrid: {} line(s) lost while the deployer could not be reached]",
                    q.lost
                ),
            });
            q.lost = 0;
        }
        if q.limited > 0 {
            batch.push(PrintedLine {
                stream: Stream::Stderr,
                unix_micros: now_micros(),
                text: format!(
                    "[actogrid: {} line(s) not forwarded: more than {RATE} lines a second]",
                    q.limited
                ),
            });
            q.limited = 0;
        }
        let mut bytes = 0;
        let mut last = None;
        while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            let Some((seq, line)) = q.lines.pop_front() else {
                break;
            };
            q.bytes -= line.text.len();
            bytes += line.text.len();
            last = Some(seq);
            batch.push(line);
        }
        (batch, last.map_or(0, |s| s + 1))
    }

    /// A batch could not be sent: it waits again, in front.
    fn put_back(&self, batch: Vec<PrintedLine>, upto: u64) {
        let mut q = lock(&self.queue);
        let first = upto.saturating_sub(batch.len() as u64);
        for (i, line) in batch.into_iter().enumerate().rev() {
            q.bytes += line.text.len();
            q.lines.push_front((first + i as u64, line));
        }
        q.trim();
    }

    fn delivered(&self, upto: u64) {
        let mut d = lock(&self.delivered);
        *d = (*d).max(upto);
        self.delivery.notify_all();
    }

    fn set(&self, forwarding: Forwarding) {
        let mut q = lock(&self.queue);
        q.forwarding = forwarding;
        if forwarding == Forwarding::Off {
            q.lines.clear();
            q.bytes = 0;
            let end = q.next_seq;
            drop(q);
            self.delivered(end);
        }
    }

    /// Waits (blocking) until lines below `seq` have left, up to `limit`.
    fn wait_delivered(&self, seq: u64, limit: Duration) {
        let d = lock(&self.delivered);
        let _ = self
            .delivery
            .wait_timeout_while(d, limit, |d| *d < seq)
            .map(drop);
    }
}

impl Queue {
    fn add(&mut self, stream: Stream, text: String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += text.len();
        self.lines.push_back((
            seq,
            PrintedLine {
                stream,
                unix_micros: now_micros(),
                text,
            },
        ));
        self.trim();
    }

    fn trim(&mut self) {
        while self.lines.len() > QUEUE_LINES || self.bytes > QUEUE_BYTES {
            match self.lines.pop_front() {
                Some((_, old)) => {
                    self.bytes -= old.text.len();
                    self.lost += 1;
                }
                None => break,
            }
        }
    }
}

/// The runtime was admitted as runtime `runtime`: its output goes to
/// `sink` from now on (the lines printed so far first). Without a sink
/// nothing is kept.
pub(crate) fn forward(sink: Option<LogSinkProxy>, runtime: u64) {
    let Some(c) = capture().get().cloned() else {
        return;
    };
    let Some(sink) = sink else {
        return c.set(Forwarding::Off);
    };
    c.set(Forwarding::On);
    tokio::spawn(async move {
        loop {
            c.wake.notified().await;
            tokio::time::sleep(GATHER).await;
            loop {
                let (batch, upto) = c.batch();
                if batch.is_empty() {
                    break;
                }
                let sent = tokio::time::timeout(
                    Duration::from_secs(5),
                    sink.lines(runtime, batch.clone()),
                )
                .await;
                match sent {
                    Ok(Ok(true)) => c.delivered(upto),
                    Ok(Ok(false)) => return c.set(Forwarding::Off),
                    Ok(Err(_)) | Err(_) => {
                        c.put_back(batch, upto);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        // Try again even if nothing new is printed.
                        c.wake.notify_one();
                        break;
                    }
                }
            }
        }
    });
}

/// Waits until what was printed so far has left (or `limit`): called
/// before the runtime exits.
pub(crate) async fn flush(limit: Duration) {
    let Some(c) = capture().get().cloned() else {
        return;
    };
    let _ = std::io::stdout().flush();
    if lock(&c.queue).forwarding != Forwarding::On {
        return;
    }
    let seq = lock(&c.queue).next_seq;
    let _ = tokio::task::spawn_blocking(move || c.wait_delivered(seq, limit)).await;
}

/// The panic hook of a forwarding runtime: the message with its location
/// (and a backtrace when `RUST_BACKTRACE` asks) on the original standard
/// error and to the deployer.
fn on_panic(c: &Capture, info: &std::panic::PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned());
    let location = info.location().map_or_else(String::new, |l| {
        format!(" at {}:{}:{}", l.file(), l.line(), l.column())
    });
    let mut text = format!("thread '{name}' panicked{location}:\n{payload}");
    let trace = std::backtrace::Backtrace::capture();
    if trace.status() == std::backtrace::BacktraceStatus::Captured {
        text.push_str(&format!("\nstack backtrace:\n{trace}"));
    }
    let _ = writeln!(&*c.stderr, "{text}");
    for line in text.lines() {
        c.push(Stream::Stderr, line.to_owned());
    }
    let last = lock(&c.queue).next_seq;
    // A panic on an async worker is caught by the runtime (the caller gets
    // it as an error) and waiting there could hold up the sender itself;
    // elsewhere the process may be about to end.
    if tokio::runtime::Handle::try_current().is_err() && lock(&c.queue).forwarding == Forwarding::On
    {
        c.wait_delivered(last, Duration::from_secs(1));
    }
}
