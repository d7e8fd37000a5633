//! Deploying another program's binary (`actogrid deploy --program
//! ./my-app`, [`DeployOptions::program`](super::DeployOptions::program)):
//! the technical services a descriptor names may exist only in that
//! binary, so it is asked about them. Started with
//! `ACTOGRID_DESCRIBE_SERVICES` set, an actogrid application reads the
//! definitions on its standard input, builds each service as its runtimes
//! will, answers one line on its standard output and exits before `main`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::services::{Described, describe_here};

/// Set on a program asked to describe its technical services.
pub(crate) const DESCRIBE_ENV: &str = "ACTOGRID_DESCRIBE_SERVICES";

/// The start of the answer line.
const ANSWER: &str = "actogrid-services ";

/// How long a program may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The most a request or an answer may hold.
const MAX_SIZE: u64 = 64 << 20;

/// One technical-service definition of the descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Definition {
    pub(crate) id: String,
    pub(crate) class: String,
    pub(crate) args: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    definitions: Vec<Definition>,
}

/// What the program said.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Answer {
    /// The technical-service classes it has.
    pub(crate) classes: Vec<String>,
    /// Each definition of the request, in order: `None` when it lacks the
    /// class.
    pub(crate) described: Vec<Option<Described>>,
    /// Its runtime settings (`#[actogrid::main(...)]`, then its
    /// environment) that differ from the defaults, as variables.
    pub(crate) settings: Vec<(String, String)>,
}

/// In an application: when asked to describe its services, answers and
/// exits (status 0, or 2 on a request it cannot read); otherwise returns.
/// `settings` are the program's runtime settings.
pub(crate) fn answer_if_asked(settings: impl FnOnce() -> actogrid_runtime::Config) {
    if std::env::var_os(DESCRIBE_ENV).is_none() {
        return;
    }
    let mut text = String::new();
    let request = std::io::stdin()
        .take(MAX_SIZE)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(&text).map_err(|e| e.to_string()));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("actogrid: {DESCRIBE_ENV}: cannot read the request on stdin: {e}");
            std::process::exit(2);
        }
    };
    let answer = Answer {
        classes: actogrid_technical_services::classes()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        described: request
            .definitions
            .iter()
            .map(|d| describe_here(&d.class, &d.args.iter().cloned().collect()))
            .collect(),
        settings: settings().to_env(),
    };
    let code = match serde_json::to_string(&answer) {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{ANSWER}{json}").and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
        Err(e) => {
            eprintln!("actogrid: {DESCRIBE_ENV}: cannot write the answer: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Asks `program` about `definitions`. Blocks up to 30 s; the error says
/// what went wrong, with the end of what the program printed on stderr.
pub(crate) fn ask(program: &Path, definitions: Vec<Definition>) -> Result<Answer, String> {
    let shown = program.display();
    let request = serde_json::to_vec(&Request { definitions }).map_err(|e| e.to_string())?;
    let mut child = Command::new(program)
        .env(DESCRIBE_ENV, "1")
        .env_remove(super::agent::DEPLOYER_ENV)
        .env_remove(crate::process::NODE_LISTEN_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot talk to {shown}"));
    };
    std::thread::spawn(move || {
        // A program that does not read its stdin closes it: nothing to do.
        let _ = stdin.write_all(&request);
    });
    // The last 4 KiB of what it prints on stderr, for the error (read
    // without waiting for the end: a child of it may keep the pipe open).
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tail = errors.clone();
    let (ended, stderr_ended) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ended = ended;
        let mut buf = [0u8; 8192];
        let mut stderr = stderr;
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut tail = tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(4096);
            tail.drain(..excess);
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout.take(MAX_SIZE));
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(json) = line.strip_prefix(ANSWER) {
                        let _ = tx.send(Some(json.trim_end().to_owned()));
                        return;
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
    let received = rx.recv_timeout(TIMEOUT);
    let finished = matches!(received, Ok(Some(_))) && wait_briefly(&mut child);
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().ok();
    // What it printed last comes in just after it ends.
    let _ = stderr_ended.recv_timeout(Duration::from_secs(1));
    let stderr = {
        let tail = errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&tail).trim().to_owned()
    };
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!("; it printed:\n{stderr}")
    };
    let not_an_application = "is it an actogrid application (`#[actogrid::main]`, or \
                              `actogrid::serve_if_deployed()` first in `main`)";
    match received {
        Ok(Some(json)) => serde_json::from_str(&json)
            .map_err(|e| format!("{shown} answered something unreadable: {e}")),
        Ok(None) => Err(format!(
            "{shown} ended ({}) without describing its technical services: {not_an_application}?{said}",
            status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
        )),
        Err(_) => Err(format!(
            "{shown} did not describe its technical services within {} s: {not_an_application}?{said}",
            TIMEOUT.as_secs()
        )),
    }
}

/// Waits up to a second for a child that has answered to exit by itself.
fn wait_briefly(child: &mut std::process::Child) -> bool {
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
