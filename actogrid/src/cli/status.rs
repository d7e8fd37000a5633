//! `actogrid status URL`: a running deployment's virtual nodes, runtimes,
//! nodes and batch jobs, as text or JSON.

use std::process::ExitCode;

use actogrid::DeploymentStatus;

use super::http::Dashboard;

/// Arguments of `actogrid status`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The deployment's dashboard URL (`http://host:port/?token=…`, printed
    /// when it starts).
    url: String,
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
    let dashboard = Dashboard::parse(&args.url)?;
    let body = dashboard.get("/api/state", &[]).await?.all().await?;
    let state: DeploymentStatus = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{}: the answer does not read: {e}", dashboard.address))?;
    if args.format == "json" {
        return Ok(serde_json::to_string_pretty(&state)? + "\n");
    }
    Ok(state.to_string())
}
