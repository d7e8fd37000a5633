//! SLURM: `sbatch` jobs whose single `srun` step starts the runtimes.
//!
//! **Launcher: `srun`.** Inside a batch allocation one `srun` step with
//! `nodes × tasksPerNode` tasks starts one runtime per slot, spread and
//! pinned by SLURM, tracked by `slurmstepd` (so `scancel` kills every
//! runtime) and accounted to the job. The step gets
//! `--kill-on-bad-exit=0`: a runtime that crashes must not take its
//! siblings down, since the deployer replaces lost runtimes one by one; the
//! job still fails at the end because `srun` then exits non-zero.
//! `--cpus-per-task` is repeated on `srun` because SLURM 22.05 and later no
//! longer pass it from `sbatch` to the steps.
//!
//! **State.** `squeue -t all` answers for pending, running and recently
//! ended jobs; `scontrol show job` adds the exit code of ended ones; `sacct`
//! answers for jobs the controller has forgotten (after `MinJobAge`), when
//! accounting is on. A job none of them knows is [`JobState::Gone`].

use super::{
    BatchError, JobFiles, JobState, ParseError, Query, Tools, directive_value, enter_work_dir, hms,
    last_line, launch_and_wait, one_line,
};
use crate::exec::{RuntimeCommand, quote};
use actogrid_descriptor::model::SlurmProcess;

pub(crate) fn script(
    s: &mut String,
    p: &SlurmProcess,
    files: &JobFiles,
    task: &RuntimeCommand,
    tools: &Tools,
) {
    directives(s, p, files);
    enter_work_dir(s, files);
    let n = u64::from(p.nodes) * u64::from(p.tasks_per_node);
    s.push_str(&format!(
        "# {n} runtime(s): one srun task per slot; one that fails does not stop the others\n"
    ));
    let mut srun = format!(
        "{} --kill-on-bad-exit=0 --nodes={} --ntasks={n} --ntasks-per-node={}",
        tools.tool("srun"),
        p.nodes,
        p.tasks_per_node
    );
    if let Some(c) = p.cpus_per_task {
        srun.push_str(&format!(" --cpus-per-task={c}"));
    }
    srun.push(' ');
    srun.push_str(&task.argv_line());
    launch_and_wait(s, &srun);
}

/// The `#SBATCH` lines of a job of `p` whose files are `files`.
pub(crate) fn directives(s: &mut String, p: &SlurmProcess, files: &JobFiles) {
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#SBATCH --{opt}={}\n", directive_value(v)));
    };
    d("job-name", &files.job_name);
    if let Some(v) = &p.partition {
        d("partition", v);
    }
    if let Some(v) = &p.account {
        d("account", v);
    }
    d("nodes", &p.nodes.to_string());
    d("ntasks-per-node", &p.tasks_per_node.to_string());
    if let Some(c) = p.cpus_per_task {
        d("cpus-per-task", &c.to_string());
    }
    if let Some(w) = p.walltime {
        d("time", &hms(w));
    }
    if let Some(m) = &p.memory {
        d("mem", m);
    }
    d("output", &files.output);
    d("error", &files.error);
    for extra in &p.extra_options {
        s.push_str(&format!("#SBATCH {}\n", one_line(extra)));
    }
}

/// The job id printed by `sbatch --parsable`: `123`, or `123;cluster` on a
/// federation.
pub fn parse_job_id(stdout: &str) -> Result<String, ParseError> {
    let id = last_line(stdout)
        .and_then(|l| l.split(';').next())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    id.map(str::to_owned)
        .ok_or_else(|| ParseError::new("a job id", stdout))
}

/// Replaces the `%j`, `%J`, `%x` and `%%` patterns of an `--output` or
/// `--error` path.
pub fn expand_pattern(path: &str, id: &str, name: &str) -> String {
    let mut out = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('j' | 'J') => out.push_str(id),
            Some('x') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

pub(crate) fn squeue_command(tools: &Tools, id: &str) -> String {
    format!(
        "{} -h -t all -j {} -o '%T|%r'",
        tools.tool("squeue"),
        quote(id)
    )
}

/// The state in a SLURM state word (`PENDING`, `COMPLETED`, `CANCELLED by
/// 0`, …), its reason and the exit code (`3:0`) when known.
pub fn job_state(state: &str, reason: &str, exit_code: Option<&str>) -> JobState {
    let word = state
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+')
        .to_ascii_uppercase();
    let reason = match reason.trim() {
        "None" | "(null)" => "",
        r => r,
    };
    let failed = || {
        let mut why = word.clone();
        if !reason.is_empty() {
            why.push_str(&format!(": {reason}"));
        }
        if let Some(code) = exit_code.filter(|c| !c.is_empty() && *c != "0:0") {
            why.push_str(&format!(" (exit code {code})"));
        }
        JobState::Failed { reason: why }
    };
    match word.as_str() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SUSPENDED" | "STOPPED" => JobState::Pending {
            reason: if word == "PENDING" || word == "CONFIGURING" {
                reason.to_owned()
            } else if reason.is_empty() {
                word.to_ascii_lowercase()
            } else {
                format!("{}: {reason}", word.to_ascii_lowercase())
            },
        },
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "RESIZING" | "SIGNALING" => JobState::Running,
        "COMPLETED" => match exit_code {
            Some(c) if !c.is_empty() && c != "0:0" => failed(),
            _ => JobState::Completed,
        },
        "CANCELLED" => JobState::Cancelled,
        "FAILED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" | "BOOT_FAIL" | "DEADLINE"
        | "PREEMPTED" | "SPECIAL_EXIT" | "REVOKED" => failed(),
        "" => JobState::Unknown(state.to_owned()),
        _ => JobState::Unknown(state.trim().to_owned()),
    }
}

/// `squeue -h -t all -j ID -o '%T|%r'`: `RUNNING|None`; `None` when empty.
pub fn parse_squeue(out: &str) -> Result<Option<JobState>, ParseError> {
    let Some(line) = last_line(out) else {
        return Ok(None);
    };
    let (state, reason) = line
        .split_once('|')
        .ok_or_else(|| ParseError::new("the job state", out))?;
    if state.trim().is_empty() || state.contains(char::is_whitespace) {
        return Err(ParseError::new("the job state", out));
    }
    Ok(Some(job_state(state, reason, None)))
}

/// `scontrol show job ID`: its `JobState=`, `Reason=` and `ExitCode=`
/// fields; `None` when empty.
pub fn parse_scontrol(out: &str) -> Result<Option<JobState>, ParseError> {
    if out.trim().is_empty() {
        return Ok(None);
    }
    let mut state = None;
    let mut reason = "";
    let mut exit_code = None;
    for token in out.split_whitespace() {
        if let Some((k, v)) = token.split_once('=') {
            match k {
                "JobState" if state.is_none() => state = Some(v),
                "Reason" if reason.is_empty() => reason = v,
                "ExitCode" if exit_code.is_none() => exit_code = Some(v),
                _ => {}
            }
        }
    }
    let state = state.ok_or_else(|| ParseError::new("JobState=", out))?;
    Ok(Some(job_state(state, reason, exit_code)))
}

/// `sacct -n -P -j ID -o State,ExitCode,Reason`: the first line is the job
/// (the next ones are its steps); `None` when empty.
pub fn parse_sacct(out: &str) -> Result<Option<JobState>, ParseError> {
    let Some(line) = out.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let mut fields = line.split('|');
    let (Some(state), Some(code)) = (fields.next(), fields.next()) else {
        return Err(ParseError::new("State|ExitCode|Reason", out));
    };
    let reason = fields.next().unwrap_or("");
    Ok(Some(job_state(state, reason, Some(code))))
}

fn unknown_job(stderr: &str) -> bool {
    stderr.contains("Invalid job id specified")
}

pub(crate) async fn state(q: &Query<'_>, id: &str) -> Result<JobState, BatchError> {
    let squeue = squeue_command(q.tools, id);
    let out = q.run(&squeue, "squeue", None).await?;
    let first = if out.success() {
        parse_squeue(&out.stdout_text()).map_err(|e| q.unparsed(&squeue, e))?
    } else if unknown_job(&out.stderr_text()) {
        None
    } else {
        return Err(q.refused("squeue cannot tell the job state", &squeue, &out));
    };
    match &first {
        Some(s @ (JobState::Pending { .. } | JobState::Running | JobState::Cancelled)) => {
            return Ok(s.clone());
        }
        Some(JobState::Completed) => return Ok(JobState::Completed),
        _ => {}
    }

    // Ended badly, or no longer in the queue: scontrol has the exit code.
    let scontrol = format!("{} show job {}", q.tools.tool("scontrol"), quote(id));
    let out = q.run(&scontrol, "scontrol", None).await?;
    if out.success() {
        if let Some(s) = parse_scontrol(&out.stdout_text()).map_err(|e| q.unparsed(&scontrol, e))? {
            return Ok(s);
        }
    } else if !unknown_job(&out.stderr_text()) {
        return Err(q.refused("scontrol cannot tell the job state", &scontrol, &out));
    }
    if let Some(s) = first {
        return Ok(s);
    }

    // Forgotten by the controller: accounting, when there is one. Without
    // accounting storage sacct fails; the job is then simply gone.
    let sacct = format!(
        "{} -n -P -j {} -o State,ExitCode,Reason",
        q.tools.tool("sacct"),
        quote(id)
    );
    let out = q.run(&sacct, "sacct", None).await?;
    if out.success()
        && let Ok(Some(s)) = parse_sacct(&out.stdout_text())
    {
        return Ok(s);
    }
    Ok(JobState::Gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("77;cluster2\n").unwrap(), "77");
        let err = parse_job_id("sbatch: error: something\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read a job id in `sbatch: error: something`"
        );
        assert_eq!(
            parse_job_id("").unwrap_err().to_string(),
            "cannot read a job id in an empty output"
        );
        assert!(parse_job_id("Submitted batch job 5").is_err());
    }

    #[test]
    fn squeue_lines() {
        assert_eq!(
            parse_squeue("PENDING|Priority\n").unwrap(),
            Some(JobState::Pending {
                reason: "Priority".into()
            })
        );
        assert_eq!(
            parse_squeue("RUNNING|None\n").unwrap(),
            Some(JobState::Running)
        );
        assert_eq!(
            parse_squeue("COMPLETING|None").unwrap(),
            Some(JobState::Running)
        );
        assert_eq!(
            parse_squeue("COMPLETED|None").unwrap(),
            Some(JobState::Completed)
        );
        assert_eq!(
            parse_squeue("CANCELLED|None").unwrap(),
            Some(JobState::Cancelled)
        );
        assert_eq!(
            parse_squeue("FAILED|NonZeroExitCode").unwrap(),
            Some(JobState::Failed {
                reason: "FAILED: NonZeroExitCode".into()
            })
        );
        assert_eq!(
            parse_squeue("SUSPENDED|None").unwrap(),
            Some(JobState::Pending {
                reason: "suspended".into()
            })
        );
        assert_eq!(
            parse_squeue("WEIRD|x").unwrap(),
            Some(JobState::Unknown("WEIRD".into()))
        );
        assert_eq!(parse_squeue("").unwrap(), None);
        assert!(parse_squeue("garbage without separator").is_err());
    }

    #[test]
    fn scontrol_records() {
        let failed = "JobId=2 JobName=wrap\n   UserId=root(0) GroupId=root(0) MCS_label=N/A\n   \
                      JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   \
                      Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0\n   \
                      RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A\n";
        assert_eq!(
            parse_scontrol(failed).unwrap(),
            Some(JobState::Failed {
                reason: "FAILED: NonZeroExitCode (exit code 3:0)".into()
            })
        );
        let cancelled = "JobId=3 JobName=wrap\n   JobState=CANCELLED Reason=None \
                         Dependency=(null)\n   ExitCode=0:15\n";
        assert_eq!(
            parse_scontrol(cancelled).unwrap(),
            Some(JobState::Cancelled)
        );
        let done = "JobId=4 JobName=x\n   JobState=COMPLETED Reason=None\n   ExitCode=0:0\n";
        assert_eq!(parse_scontrol(done).unwrap(), Some(JobState::Completed));
        let timeout = "JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15";
        assert_eq!(
            parse_scontrol(timeout).unwrap(),
            Some(JobState::Failed {
                reason: "TIMEOUT: TimeLimit (exit code 0:15)".into()
            })
        );
        assert_eq!(parse_scontrol("  \n").unwrap(), None);
        let err = parse_scontrol("No job here").unwrap_err();
        assert!(err.to_string().contains("JobState="), "{err}");
    }

    #[test]
    fn sacct_records() {
        let out = "COMPLETED|0:0|None\nCOMPLETED|0:0|\nCOMPLETED|0:0|\n";
        assert_eq!(parse_sacct(out).unwrap(), Some(JobState::Completed));
        assert_eq!(
            parse_sacct("CANCELLED by 0|0:15|None\n").unwrap(),
            Some(JobState::Cancelled)
        );
        assert_eq!(
            parse_sacct("OUT_OF_MEMORY|0:125|OutOfMemory\n").unwrap(),
            Some(JobState::Failed {
                reason: "OUT_OF_MEMORY: OutOfMemory (exit code 0:125)".into()
            })
        );
        assert_eq!(parse_sacct("").unwrap(), None);
        assert!(parse_sacct("nonsense").is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(
            expand_pattern("/l/%x-%j.err", "42", "solver"),
            "/l/solver-42.err"
        );
        assert_eq!(expand_pattern("100%%-%q%", "1", "n"), "100%-%q%");
    }
}
