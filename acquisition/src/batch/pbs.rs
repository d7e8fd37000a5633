//! PBS Pro and Torque: `qsub` jobs whose runtimes are started by `pbsdsh`.
//!
//! **Launcher: `pbsdsh`.** Without `-u`, `pbsdsh` starts its program once
//! per entry of `$PBS_NODEFILE`, that is once per allocated slot, through
//! the task manager of the PBS MOMs: the tasks are part of the job, the
//! MOMs kill them on `qdel` and account their use. A loop of `ssh` (or
//! `pbs_tmrsh`) over `$PBS_NODEFILE` would also work, but plain `ssh`
//! processes escape the job on many sites, and `pbsdsh` exists under the
//! same name in both PBS Pro and Torque. It runs its program without a
//! shell and without searching the `PATH`, hence `/usr/bin/env` in front of
//! the runtime command.
//!
//! **Resources.** `hostsNumber × processorPerNode` becomes
//! `-l nodes=H:ppn=P` (Torque syntax, which PBS Pro also accepts), a host
//! list becomes `-l nodes=host1:ppn=P+host2:ppn=P`, `bookingDuration` is
//! `-l walltime=`. `-S /bin/sh` makes the script run with `sh` whatever the
//! user's login shell.
//!
//! **State.** `qstat -f ID`: `job_state` (`Q`, `H`, `W`, `T`, `S` pending,
//! `R`, `E` running, `C` (Torque) and `F` (PBS Pro) ended, with
//! `exit_status`). PBS Pro drops ended jobs from `qstat` unless asked with
//! `-x`, and says so; only then is `qstat -fx` asked (for Torque `-x` means
//! XML). A job `qstat` does not know is [`JobState::Gone`].

use super::{
    BatchError, JobFiles, JobState, ParseError, Query, Tools, directive_value, enter_work_dir, hms,
    last_line, launch_and_wait,
};
use crate::exec::{RuntimeCommand, quote};
use actogrid_descriptor::model::PbsProcess;

/// How many slots (and runtimes) the request asks for.
pub(crate) fn slots(p: &PbsProcess) -> u64 {
    let ppn = u64::from(p.processor_per_node.unwrap_or(1));
    if !p.hostlist.is_empty() {
        p.hostlist.len() as u64 * ppn
    } else {
        u64::from(p.hosts_number.unwrap_or(1)) * ppn
    }
}

fn nodes_request(p: &PbsProcess) -> Option<String> {
    let ppn = p.processor_per_node.map(|n| format!(":ppn={n}"));
    let ppn = ppn.as_deref().unwrap_or("");
    if !p.hostlist.is_empty() {
        let hosts: Vec<String> = p.hostlist.iter().map(|h| format!("{h}{ppn}")).collect();
        return Some(hosts.join("+"));
    }
    match (p.hosts_number, p.processor_per_node) {
        (None, None) => None,
        (h, _) => Some(format!("{}{ppn}", h.unwrap_or(1))),
    }
}

pub(crate) fn script(
    s: &mut String,
    p: &PbsProcess,
    files: &JobFiles,
    task: &RuntimeCommand,
    tools: &Tools,
) {
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#PBS {opt} {}\n", directive_value(v)));
    };
    d("-N", &files.job_name);
    d("-S", "/bin/sh");
    if let Some(q) = &p.queue {
        d("-q", q);
    }
    if let Some(nodes) = nodes_request(p) {
        d("-l", &format!("nodes={nodes}"));
    }
    if let Some(w) = p.booking_duration {
        d("-l", &format!("walltime={}", hms(w)));
    }
    d("-o", &files.output);
    d("-e", &files.error);
    enter_work_dir(s, files);
    s.push_str(&format!(
        "# {} runtime(s): pbsdsh starts one per line of $PBS_NODEFILE\n",
        slots(p)
    ));
    let line = format!(
        "{} -- /usr/bin/env {}",
        tools.tool("pbsdsh"),
        env_operands(task)
    );
    launch_and_wait(s, &line);
}

/// `K=V … program args…` quoted: what follows `env`.
pub(crate) fn env_operands(task: &RuntimeCommand) -> String {
    let line = task.argv_line();
    match line.strip_prefix("env ") {
        Some(rest) if !task.env.is_empty() => rest.to_owned(),
        _ => line,
    }
}

/// The job id printed by `qsub`: `123.server` (Torque, PBS Pro), or
/// `123[].server` for an array.
pub fn parse_job_id(stdout: &str) -> Result<String, ParseError> {
    last_line(stdout)
        .filter(|l| {
            l.starts_with(|c: char| c.is_ascii_digit())
                && !l.contains(char::is_whitespace)
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_[]".contains(&b))
        })
        .map(str::to_owned)
        .ok_or_else(|| ParseError::new("a job id", stdout))
}

pub(crate) fn qstat_command(tools: &Tools, id: &str, history: bool) -> String {
    let flags = if history { "-fx" } else { "-f" };
    format!("{} {flags} {}", tools.tool("qstat"), quote(id))
}

/// `qstat -f ID`: the `job_state`, `exit_status` (Torque) or `Exit_status`
/// (PBS Pro) and `comment` attributes; `None` when empty.
pub fn parse_qstat(out: &str) -> Result<Option<JobState>, ParseError> {
    if out.trim().is_empty() {
        return Ok(None);
    }
    let mut state = None;
    let mut exit = None;
    let mut comment = None;
    for line in out.lines() {
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        match k.trim() {
            "job_state" => state = Some(v.trim()),
            "exit_status" | "Exit_status" => exit = Some(v.trim()),
            "comment" => comment = Some(v.trim()),
            _ => {}
        }
    }
    let state = state.ok_or_else(|| ParseError::new("job_state", out))?;
    Ok(Some(match state {
        "Q" | "H" | "W" | "T" | "S" | "U" | "M" | "B" => JobState::Pending {
            reason: pending_reason(state, comment),
        },
        "R" | "E" => JobState::Running,
        "C" | "F" | "X" => match exit {
            Some("0") | None => JobState::Completed,
            Some(code) => JobState::Failed {
                reason: format!("exit status {code}{}", describe_exit(code)),
            },
        },
        other => JobState::Unknown(other.to_owned()),
    }))
}

fn pending_reason(state: &str, comment: Option<&str>) -> String {
    let word = match state {
        "Q" => "queued",
        "H" => "held",
        "W" => "waiting for its start time",
        "T" => "being moved",
        "S" | "U" => "suspended",
        "M" => "moved to another server",
        _ => "array job",
    };
    match comment {
        Some(c) if !c.is_empty() => format!("{word}: {c}"),
        _ => word.to_owned(),
    }
}

fn describe_exit(code: &str) -> String {
    match code.parse::<i64>() {
        // Torque and PBS Pro report a job killed by signal N as 256 + N.
        Ok(n) if n > 256 => format!(" (killed by signal {})", n - 256),
        Ok(n) if n < 0 => " (the job could not start)".to_owned(),
        _ => String::new(),
    }
}

pub(crate) async fn state(q: &Query<'_>, id: &str) -> Result<JobState, BatchError> {
    let mut history = false;
    loop {
        let command = qstat_command(q.tools, id, history);
        let out = q.run(&command, "qstat", None).await?;
        if out.success() {
            return Ok(parse_qstat(&out.stdout_text())
                .map_err(|e| q.unparsed(&command, e))?
                .unwrap_or(JobState::Gone));
        }
        let err = out.stderr_text();
        if err.contains("Unknown Job Id") || err.contains("Unknown job id") {
            return Ok(JobState::Gone);
        }
        if !history && err.contains("Job has finished") {
            history = true;
            continue;
        }
        return Err(q.refused("qstat cannot tell the job state", &command, &out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id("123.torque01\n").unwrap(), "123.torque01");
        assert_eq!(
            parse_job_id("4567.pbs.example.org").unwrap(),
            "4567.pbs.example.org"
        );
        assert_eq!(parse_job_id("12[].server\n").unwrap(), "12[].server");
        let err = parse_job_id("qsub: Unknown queue MSG=cannot locate queue\n").unwrap_err();
        assert!(err.to_string().contains("qsub: Unknown queue"), "{err}");
        assert!(parse_job_id("").is_err());
    }

    #[test]
    fn qstat_records() {
        let running = "Job Id: 123.torque01\n    Job_Name = sweep\n    job_state = R\n    \
                       queue = batch\n";
        assert_eq!(parse_qstat(running).unwrap(), Some(JobState::Running));
        let queued = "Job Id: 124.srv\n    job_state = Q\n    comment = Not Running: \
                      Insufficient amount of resource: ncpus\n";
        assert_eq!(
            parse_qstat(queued).unwrap(),
            Some(JobState::Pending {
                reason: "queued: Not Running: Insufficient amount of resource: ncpus".into()
            })
        );
        let done = "Job Id: 125.srv\n    job_state = C\n    exit_status = 0\n";
        assert_eq!(parse_qstat(done).unwrap(), Some(JobState::Completed));
        let failed = "Job Id: 126.srv\n    job_state = F\n    Exit_status = 2\n";
        assert_eq!(
            parse_qstat(failed).unwrap(),
            Some(JobState::Failed {
                reason: "exit status 2".into()
            })
        );
        let killed = "Job Id: 127.srv\n    job_state = C\n    exit_status = 271\n";
        assert_eq!(
            parse_qstat(killed).unwrap(),
            Some(JobState::Failed {
                reason: "exit status 271 (killed by signal 15)".into()
            })
        );
        assert_eq!(
            parse_qstat("Job Id: 1.s\n    job_state = Z\n").unwrap(),
            Some(JobState::Unknown("Z".into()))
        );
        assert_eq!(parse_qstat("").unwrap(), None);
        assert!(parse_qstat("Job Id: 1.s\n    queue = batch\n").is_err());
    }
}
