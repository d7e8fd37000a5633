//! `actogrid logs URL`: what the runtimes of a running deployment printed,
//! filtered by virtual node, runtime, host, node, level or stream; `--follow` goes on
//! with new lines until the deployment ends (or Ctrl-C).

use std::process::ExitCode;

use actogrid::LogLine;

use super::http::Dashboard;

/// Arguments of `actogrid logs`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The deployment's dashboard URL (`http://host:port/?token=…`);
    /// default: the one dashboard running on this machine for this user.
    url: Option<String>,
    /// Only this virtual node's runtimes.
    #[arg(long, value_name = "NAME")]
    vn: Option<String>,
    /// Only this runtime's lines (its number, as `actogrid status` shows).
    #[arg(long, value_name = "N")]
    runtime: Option<u64>,
    /// Only the runtimes on this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only the runtime of this node: its URL, or its name (every runtime
    /// with a node of that name).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// Only tracing lines of this level or more severe: error, warn, info,
    /// debug, trace.
    #[arg(long, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    level: Option<String>,
    /// Only `stdout` or `stderr`.
    #[arg(long, value_name = "STREAM", value_parser = ["stdout", "stderr"])]
    stream: Option<String>,
    /// Then wait for new lines and print them as they come.
    #[arg(long, short)]
    follow: bool,
    /// Print each line as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let tokio = actogrid::__async_runtime_or_exit();
    let outcome = tokio.block_on(async {
        tokio::select! {
            r = logs(&args) => r,
            () = actogrid::__terminated() => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
    }
}

fn query(args: &Args, follow: bool) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(v) = &args.vn {
        q.push(("vn", v.clone()));
    }
    if let Some(r) = args.runtime {
        q.push(("runtime", r.to_string()));
    }
    if let Some(h) = &args.host {
        q.push(("host", h.clone()));
    }
    if let Some(n) = &args.node {
        q.push(("node", n.clone()));
    }
    if let Some(l) = &args.level {
        q.push(("level", l.clone()));
    }
    if let Some(s) = &args.stream {
        q.push(("stream", s.clone()));
    }
    if follow {
        q.push(("follow", "1".to_owned()));
    }
    q
}

fn show(args: &Args, line: &LogLine) {
    if args.json {
        super::emit(&(serde_json::to_string(line).unwrap_or_default() + "\n"));
    } else {
        super::emit(&format!(
            "[{} {}:{}] {}\n",
            line.vn, line.host, line.pid, line.text
        ));
    }
}

async fn logs(args: &Args) -> anyhow::Result<()> {
    let url = super::http::given_or_running(args.url.as_deref())?;
    let dashboard = Dashboard::parse(&url)?;
    let body = dashboard
        .get("/api/logs", &query(args, false))
        .await?
        .all()
        .await?;
    let lines: Vec<LogLine> = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{}: the answer does not read: {e}", dashboard.address))?;
    for line in &lines {
        show(args, line);
    }
    if !args.follow {
        return Ok(());
    }
    // One JSON object per line; `{}` says the deployment is still there,
    // `{"missed":n}` that lines went by too fast.
    let mut body = dashboard.get("/api/logs", &query(args, true)).await?;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let part = body.next().await?;
        if part.is_empty() {
            return Ok(());
        }
        pending.extend_from_slice(&part);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let one: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(line) = serde_json::from_slice::<LogLine>(&one) {
                show(args, &line);
            } else if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&one) {
                if let Some(n) = m.get("missed") {
                    super::emit_err(&format!("({n} lines went by too fast to be shown)\n"));
                }
            }
        }
    }
}
