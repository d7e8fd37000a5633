//! `actogrid status URL`: a running deployment's virtual nodes, runtimes,
//! nodes, objects, calls and batch jobs — or a peer's overlay, slots and
//! lent runtimes, given its dashboard — as text or JSON.

use std::process::ExitCode;

use actogrid::DeploymentStatus;
use actogrid::peer::PeerView;

use super::http::Dashboard;

/// Arguments of `actogrid status`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The dashboard URL of a deployment or of a peer
    /// (`http://host:port/?token=…`, printed when it starts); default: the
    /// one dashboard running on this machine for this user.
    url: Option<String>,
    /// `text` (default) or `json` (the dashboard's own, for scripts).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let tokio = actogrid::__async_runtime_or_exit();
    match tokio.block_on(status(&args)) {
        Ok(text) => {
            super::emit(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
    }
}

async fn status(args: &Args) -> anyhow::Result<String> {
    let url = super::http::given_or_running(args.url.as_deref())?;
    let dashboard = Dashboard::parse(&url)?;
    let body = dashboard.get("/api/state", &[]).await?.all().await?;
    let unreadable = |e| anyhow::anyhow!("{}: the answer does not read: {e}", dashboard.address);
    // A peer's dashboard, or a deployment's.
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(unreadable)?;
    let (json, text) = if value.get("peer").is_some() {
        let view: PeerView = serde_json::from_value(value).map_err(unreadable)?;
        (serde_json::to_string_pretty(&view)?, view.to_string())
    } else {
        let state: DeploymentStatus = serde_json::from_value(value).map_err(unreadable)?;
        (serde_json::to_string_pretty(&state)?, state.to_string())
    };
    Ok(if args.format == "json" {
        json + "\n"
    } else {
        text
    })
}
