//! OAR: `oarsub -S` jobs whose runtimes are started with `oarsh`.
//!
//! **Launcher: `oarsh`.** OAR has no task launcher of its own; its
//! documentation starts remote processes with `oarsh`, the ssh wrapper that
//! enters the job's cpuset on the target node, so the processes are
//! confined to the job and killed with it. The script reads
//! `$OAR_NODEFILE` (one line per allocated resource, usually a core) and
//! starts one runtime per line with `oarsh HOST COMMAND`, standard input
//! closed so that it does not eat the list. `bookedNodesAccess="rsh"` uses
//! `rsh` instead; `ssh`, `oarsh` and no value mean `oarsh`. The command goes
//! through the remote shell, so it is passed as one quoted word. How many
//! runtimes a job starts is known only once it runs.
//!
//! **Submission.** `oarsub -S script` reads the `#OAR` directives of the
//! script: `-n` name, `-q` queue, `-l` the descriptor's `resources`, `-O`
//! and `-E` the output files.
//!
//! **State.** `oarstat -s -j ID` prints `ID: State`: `Waiting`, `Hold`,
//! `toLaunch`, `Launching`, `toAckReservation` pending; `Running`,
//! `Finishing`, `Suspended`, `Resuming` running (or pending for
//! `Suspended`); `Error` failed; `Terminated` ended, and then the
//! `exit_code` of `oarstat -f -j ID` tells success from failure.

use super::{
    BatchError, JobFiles, JobState, ParseError, Query, Tools, directive_value, enter_work_dir,
    wait_all_footer,
};
use crate::exec::{RuntimeCommand, quote};
use actogrid_descriptor::model::OarProcess;

pub(crate) fn script(
    s: &mut String,
    p: &OarProcess,
    files: &JobFiles,
    task: &RuntimeCommand,
    tools: &Tools,
) {
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#OAR {opt} {}\n", directive_value(v)));
    };
    d("-n", &files.job_name);
    if let Some(q) = &p.queue {
        d("-q", q);
    }
    if let Some(r) = &p.resources {
        d("-l", r);
    }
    d("-O", &files.output);
    d("-E", &files.error);
    enter_work_dir(s, files);
    let remote = match p.booked_nodes_access.as_deref() {
        Some("rsh") => "rsh".to_owned(),
        _ => tools.tool("oarsh"),
    };
    s.push_str("# one runtime per line of $OAR_NODEFILE\npids=\n");
    s.push_str("while read -r host; do\n");
    s.push_str(&format!(
        "  {remote} \"$host\" {} < /dev/null &\n",
        quote(&task.argv_line())
    ));
    s.push_str("  pids=\"$pids $!\"\ndone < \"$OAR_NODEFILE\"\n");
    wait_all_footer(s);
}

/// The job id printed by `oarsub`: the `OAR_JOB_ID=123` line, after
/// whatever the admission rules print.
pub fn parse_job_id(stdout: &str) -> Result<String, ParseError> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("OAR_JOB_ID="))
        .map(str::trim)
        .find(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| ParseError::new("OAR_JOB_ID=", stdout))
}

pub(crate) fn oarstat_command(tools: &Tools, id: &str) -> String {
    format!("{} -s -j {}", tools.tool("oarstat"), quote(id))
}

/// `oarstat -s -j ID`: `123: Running`; `None` when empty. `Terminated` is
/// [`JobState::Completed`] here; [`parse_exit_code`] refines it.
pub fn parse_oarstat(out: &str) -> Result<Option<JobState>, ParseError> {
    let Some(line) = out.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let (_, state) = line
        .split_once(':')
        .ok_or_else(|| ParseError::new("the job state", out))?;
    let state = state.trim();
    if state.is_empty() || state.contains(char::is_whitespace) {
        return Err(ParseError::new("the job state", out));
    }
    Ok(Some(match state {
        "Waiting" | "Hold" | "toLaunch" | "Launching" | "toAckReservation" => JobState::Pending {
            reason: state.to_owned(),
        },
        "Suspended" => JobState::Pending {
            reason: "suspended".to_owned(),
        },
        "Running" | "Finishing" | "Resuming" => JobState::Running,
        "Terminated" => JobState::Completed,
        "Error" | "toError" => JobState::Failed {
            reason: state.to_owned(),
        },
        other => JobState::Unknown(other.to_owned()),
    }))
}

/// The `exit_code = N (…)` line of `oarstat -f -j ID`, when there is one.
pub fn parse_exit_code(out: &str) -> Option<i64> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "exit_code")
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) async fn state(q: &Query<'_>, id: &str) -> Result<JobState, BatchError> {
    let command = oarstat_command(q.tools, id);
    let out = q.run(&command, "oarstat", None).await?;
    if !out.success() {
        return Err(q.refused("oarstat cannot tell the job state", &command, &out));
    }
    let state = parse_oarstat(&out.stdout_text())
        .map_err(|e| q.unparsed(&command, e))?
        .unwrap_or(JobState::Gone);
    if state != JobState::Completed {
        return Ok(state);
    }
    let full = format!("{} -f -j {}", q.tools.tool("oarstat"), quote(id));
    let out = q.run(&full, "oarstat", None).await?;
    Ok(match parse_exit_code(&out.stdout_text()) {
        Some(code) if out.success() && code != 0 => JobState::Failed {
            reason: format!("Terminated with exit code {code}"),
        },
        _ => JobState::Completed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        let out = "[ADMISSION RULE] Set default walltime to 7200.\n\
                   [ADMISSION RULE] Modify resource description with type constraints\n\
                   OAR_JOB_ID=4242\n";
        assert_eq!(parse_job_id(out).unwrap(), "4242");
        let err = parse_job_id("[ERROR] The queue nope does not exist\n").unwrap_err();
        assert!(err.to_string().contains("queue nope"), "{err}");
        assert!(parse_job_id("OAR_JOB_ID=x").is_err());
    }

    #[test]
    fn oarstat_lines() {
        assert_eq!(
            parse_oarstat("4242: Waiting\n").unwrap(),
            Some(JobState::Pending {
                reason: "Waiting".into()
            })
        );
        assert_eq!(
            parse_oarstat("4242: Running").unwrap(),
            Some(JobState::Running)
        );
        assert_eq!(
            parse_oarstat("4242: Terminated").unwrap(),
            Some(JobState::Completed)
        );
        assert_eq!(
            parse_oarstat("4242: Error").unwrap(),
            Some(JobState::Failed {
                reason: "Error".into()
            })
        );
        assert_eq!(
            parse_oarstat("4242: Strange").unwrap(),
            Some(JobState::Unknown("Strange".into()))
        );
        assert_eq!(parse_oarstat("").unwrap(), None);
        assert!(parse_oarstat("no colon here").is_err());
        assert!(parse_oarstat("1: two words").is_err());
    }

    #[test]
    fn exit_codes() {
        let out = "Job_Id: 4242\n    state = Terminated\n    exit_code = 256 (1,0,0)\n";
        assert_eq!(parse_exit_code(out), Some(256));
        assert_eq!(parse_exit_code("Job_Id: 1\n    state = Running\n"), None);
    }
}
