//! IBM Spectrum LSF: `bsub` jobs whose runtimes are started by `blaunch`.
//!
//! **Launcher: `blaunch`.** Given no host, `blaunch` runs its command on
//! every allocated host, one task per job slot, through the LSF daemons
//! (RES, sbatchd): the tasks belong to the job, are killed by `bkill` and
//! accounted. Like `rsh`, it hands the command to a shell on the remote
//! host, so the runtime command is passed as one quoted word. A job of one
//! slot runs the runtime directly.
//!
//! **Submission.** `bsub < script`: LSF reads `#BSUB` directives only from
//! a script given on standard input. `processor` is `-n`, `hostlist` is
//! `-m`, `resourceRequirement` is `-R`.
//!
//! **State.** `bjobs -noheader -o "stat exit_code pend_reason
//! delimiter='|'" ID`: `PEND`, `PSUSP`, `USUSP`, `SSUSP`, `WAIT` pending,
//! `RUN` running, `DONE` completed, `EXIT` failed (with the exit code). A job
//! `bjobs` no longer knows (`Job <ID> is not found`) is [`JobState::Gone`].

use super::{
    BatchError, JobFiles, JobState, ParseError, Query, Tools, directive_value, enter_work_dir,
    launch_and_wait, one_line,
};
use crate::exec::{RuntimeCommand, quote};
use actogrid_descriptor::model::LsfProcess;

pub(crate) fn script(
    s: &mut String,
    p: &LsfProcess,
    files: &JobFiles,
    task: &RuntimeCommand,
    tools: &Tools,
) {
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#BSUB {opt} {}\n", directive_value(v)));
    };
    d("-J", &files.job_name);
    if let Some(q) = &p.queue {
        d("-q", q);
    }
    let slots = p.processor.unwrap_or(1);
    if let Some(n) = p.processor {
        d("-n", &n.to_string());
    }
    if !p.hostlist.is_empty() {
        s.push_str(&format!(
            "#BSUB -m \"{}\"\n",
            one_line(&p.hostlist.join(" ")).replace('"', "")
        ));
    }
    if let Some(r) = &p.resource_requirement {
        s.push_str(&format!(
            "#BSUB -R \"{}\"\n",
            one_line(r).replace('"', "\\\"")
        ));
    }
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#BSUB {opt} {}\n", directive_value(v)));
    };
    d("-o", &files.output);
    d("-e", &files.error);
    enter_work_dir(s, files);
    if slots > 1 {
        s.push_str(&format!(
            "# {slots} runtime(s): blaunch starts one per job slot\n"
        ));
        let line = format!("{} {}", tools.tool("blaunch"), quote(&task.argv_line()));
        launch_and_wait(s, &line);
    } else {
        s.push_str("# 1 runtime, in the job itself\n");
        launch_and_wait(s, &task.argv_line());
    }
}

/// The job id printed by `bsub`: `Job <123> is submitted to queue <normal>.`
pub fn parse_job_id(stdout: &str) -> Result<String, ParseError> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Job <"))
        .filter_map(|rest| rest.split_once('>'))
        .map(|(id, _)| id)
        .find(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| ParseError::new("a job id", stdout))
}

pub(crate) fn bjobs_command(tools: &Tools, id: &str) -> String {
    format!(
        "{} -noheader -o \"stat exit_code pend_reason delimiter='|'\" {}",
        tools.tool("bjobs"),
        quote(id)
    )
}

/// `bjobs -noheader -o "stat exit_code pend_reason delimiter='|'"`:
/// `RUN|-|-`; `None` when empty.
pub fn parse_bjobs(out: &str) -> Result<Option<JobState>, ParseError> {
    let Some(line) = out.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let mut fields = line.splitn(3, '|');
    let stat = fields.next().unwrap_or("").trim();
    let code = fields
        .next()
        .map(str::trim)
        .filter(|c| *c != "-" && !c.is_empty());
    let reason = fields
        .next()
        .map(str::trim)
        .filter(|r| *r != "-")
        .unwrap_or("");
    if stat.is_empty() || stat.contains(char::is_whitespace) {
        return Err(ParseError::new("the job state", out));
    }
    Ok(Some(match stat {
        "PEND" | "WAIT" => JobState::Pending {
            reason: reason.to_owned(),
        },
        "PSUSP" | "USUSP" | "SSUSP" => JobState::Pending {
            reason: if reason.is_empty() {
                format!("suspended ({stat})")
            } else {
                format!("suspended ({stat}): {reason}")
            },
        },
        "RUN" | "PROV" => JobState::Running,
        "DONE" => JobState::Completed,
        "EXIT" => JobState::Failed {
            reason: match code {
                Some(c) => format!("EXIT (exit code {c})"),
                None => "EXIT".to_owned(),
            },
        },
        other => JobState::Unknown(other.to_owned()),
    }))
}

pub(crate) async fn state(q: &Query<'_>, id: &str) -> Result<JobState, BatchError> {
    let command = bjobs_command(q.tools, id);
    let out = q.run(&command, "bjobs", None).await?;
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    // bjobs reports an unknown job on stderr, with exit code 255.
    if stderr.contains("is not found") && stdout.is_empty() {
        return Ok(JobState::Gone);
    }
    if !out.success() {
        return Err(q.refused("bjobs cannot tell the job state", &command, &out));
    }
    Ok(parse_bjobs(&stdout)
        .map_err(|e| q.unparsed(&command, e))?
        .unwrap_or(JobState::Gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(
            parse_job_id("Job <123> is submitted to queue <normal>.\n").unwrap(),
            "123"
        );
        assert_eq!(
            parse_job_id("Job <9> is submitted to default queue <normal>.").unwrap(),
            "9"
        );
        let err = parse_job_id("normal: No such queue. Job not submitted.\n").unwrap_err();
        assert!(err.to_string().contains("No such queue"), "{err}");
        assert!(parse_job_id("Job <abc> is submitted").is_err());
        assert!(parse_job_id("Job <").is_err());
    }

    #[test]
    fn bjobs_lines() {
        assert_eq!(
            parse_bjobs("PEND|-|New job is waiting for scheduling\n").unwrap(),
            Some(JobState::Pending {
                reason: "New job is waiting for scheduling".into()
            })
        );
        assert_eq!(parse_bjobs("RUN|-|-\n").unwrap(), Some(JobState::Running));
        assert_eq!(parse_bjobs("DONE|-|-").unwrap(), Some(JobState::Completed));
        assert_eq!(
            parse_bjobs("EXIT|130|-").unwrap(),
            Some(JobState::Failed {
                reason: "EXIT (exit code 130)".into()
            })
        );
        assert_eq!(
            parse_bjobs("USUSP|-|-").unwrap(),
            Some(JobState::Pending {
                reason: "suspended (USUSP)".into()
            })
        );
        assert_eq!(
            parse_bjobs("ZOMBI|-|-").unwrap(),
            Some(JobState::Unknown("ZOMBI".into()))
        );
        assert_eq!(parse_bjobs("\n").unwrap(), None);
        assert!(parse_bjobs("STAT EXIT_CODE PEND_REASON").is_err());
    }
}
