//! Grid Engine (Sun, Son of, Univa/Altair): `qsub` jobs whose runtimes are
//! started with `qrsh -inherit`.
//!
//! **Launcher: `qrsh -inherit`.** In a parallel environment with
//! `control_slaves TRUE` (the "tight integration"), `qrsh -inherit HOST
//! COMMAND` starts a task on a host of the job's allocation through the
//! execution daemons, so it is tracked, accounted and killed with the job.
//! The script reads `$PE_HOSTFILE` (`host slots queue processors` per line)
//! and starts one runtime per slot, standard input closed (`-nostdin`).
//! Like `rsh`, `qrsh` hands the command to a shell, so it is passed as one
//! quoted word. Without a parallel environment a job has one slot and runs
//! the runtime directly; asking `hostsNumber` without a
//! `parallelEnvironment` is refused, since Grid Engine gives more than one
//! slot only through one.
//!
//! **Directives.** `-S /bin/sh` (queues default to `csh`), `-pe PE N`,
//! `-q`, `-l h_rt=` for `bookingDuration`, `-l hostname=a|b|…` for the
//! host list, `-o` and `-e`.
//!
//! **State.** `qstat -j ID` does not print the state on every Grid Engine
//! version; the job list of `qstat` does (`qw`, `hqw`, `r`, `t`, `Eqw`,
//! `dr`, …). A job that left the list is looked up in `qacct -j ID`
//! (`failed`, `exit_status`); when accounting does not know it (yet), it is
//! [`JobState::Gone`].

use super::{
    BatchError, JobFiles, JobState, ParseError, Query, SchedulerKind, Tools, directive_value,
    enter_work_dir, hms, launch_and_wait, wait_all_footer,
};
use crate::exec::{RuntimeCommand, quote};
use actogrid_descriptor::model::GridEngineProcess;

/// How many slots (and runtimes) the request asks for.
pub(crate) fn slots(p: &GridEngineProcess) -> u32 {
    match p.parallel_environment {
        Some(_) => p.hosts_number.unwrap_or(1),
        None => 1,
    }
}

pub(crate) fn check(p: &GridEngineProcess) -> Result<(), BatchError> {
    match (p.hosts_number, &p.parallel_environment) {
        (Some(n), None) if n > 1 => Err(BatchError::Unsupported {
            scheduler: SchedulerKind::GridEngine,
            detail: format!(
                "hostsNumber {n} needs a parallelEnvironment: Grid Engine gives more than one \
                 slot only through a parallel environment (ask your site which one, e.g. `mpi`)"
            ),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn script(
    s: &mut String,
    p: &GridEngineProcess,
    files: &JobFiles,
    task: &RuntimeCommand,
    tools: &Tools,
) {
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#$ {opt} {}\n", directive_value(v)));
    };
    d("-N", &files.job_name);
    d("-S", "/bin/sh");
    if let Some(q) = &p.queue {
        d("-q", q);
    }
    if let Some(pe) = &p.parallel_environment {
        s.push_str(&format!("#$ -pe {} {}\n", directive_value(pe), slots(p)));
    }
    let mut d = |opt: &str, v: &str| {
        s.push_str(&format!("#$ {opt} {}\n", directive_value(v)));
    };
    if let Some(w) = p.booking_duration {
        d("-l", &format!("h_rt={}", hms(w)));
    }
    if !p.hostlist.is_empty() {
        d("-l", &format!("hostname={}", p.hostlist.join("|")));
    }
    d("-o", &files.output);
    d("-e", &files.error);
    enter_work_dir(s, files);
    if p.parallel_environment.is_none() {
        s.push_str("# 1 runtime, in the job itself\n");
        launch_and_wait(s, &task.argv_line());
        return;
    }
    s.push_str(&format!(
        "# {} runtime(s): one per slot of $PE_HOSTFILE\npids=\n",
        slots(p)
    ));
    s.push_str(
        "while read -r host nslots rest; do\n  i=0\n  while [ \"$i\" -lt \"$nslots\" ]; do\n",
    );
    s.push_str(&format!(
        "    {} -inherit -nostdin \"$host\" {} < /dev/null &\n",
        tools.tool("qrsh"),
        quote(&task.argv_line())
    ));
    s.push_str("    pids=\"$pids $!\"\n    i=$((i + 1))\n  done\ndone < \"$PE_HOSTFILE\"\n");
    wait_all_footer(s);
}

/// The job id printed by `qsub`: `Your job 123 ("name") has been
/// submitted`, `Your job-array 123.1-4:1 ("name") has been submitted`, or
/// the bare id of `qsub -terse`.
pub fn parse_job_id(stdout: &str) -> Result<String, ParseError> {
    let digits = |w: &str| {
        let id: String = w.chars().take_while(char::is_ascii_digit).collect();
        (!id.is_empty()).then_some(id)
    };
    for line in stdout.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("Your"), Some("job" | "job-array"), Some(id)) => {
                if let Some(id) = digits(id) {
                    return Ok(id);
                }
            }
            (Some(id), None, None) if id.bytes().all(|b| b.is_ascii_digit()) => {
                return Ok(id.to_owned());
            }
            _ => {}
        }
    }
    Err(ParseError::new("a job id", stdout))
}

pub(crate) fn qstat_command(tools: &Tools) -> String {
    tools.tool("qstat")
}

/// The job list of `qstat`: the state column of the line of job `id`;
/// `None` when the job is not listed.
pub fn parse_qstat(out: &str, id: &str) -> Result<Option<JobState>, ParseError> {
    for line in out.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(id) {
            continue;
        }
        // job-ID prior name user state submit/start-at …
        let state = words
            .nth(3)
            .ok_or_else(|| ParseError::new("the job state", out))?;
        return Ok(Some(state_of(state)));
    }
    if !out.trim().is_empty() && !out.contains("job-ID") {
        return Err(ParseError::new("the job list", out));
    }
    Ok(None)
}

/// A Grid Engine state code (`qw`, `r`, `Eqw`, `dr`, …).
pub fn state_of(code: &str) -> JobState {
    if code.contains('E') {
        return JobState::Failed {
            reason: format!("{code}: the job is in error state (see qstat -j)"),
        };
    }
    if code.contains('d') {
        return JobState::Cancelled;
    }
    if code.contains('s') || code.contains('S') || code.contains('T') {
        return JobState::Pending {
            reason: format!("{code}: suspended"),
        };
    }
    if code.contains('r') || code.contains('t') || code.contains('R') {
        return JobState::Running;
    }
    if code.contains('w') || code.contains('h') {
        return JobState::Pending {
            reason: code.to_owned(),
        };
    }
    JobState::Unknown(code.to_owned())
}

/// `qacct -j ID`: the `failed` and `exit_status` fields of the record.
pub fn parse_qacct(out: &str) -> Result<JobState, ParseError> {
    let field = |name: &str| {
        out.lines()
            .filter_map(|l| l.trim().split_once(char::is_whitespace))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
    };
    let exit = field("exit_status").ok_or_else(|| ParseError::new("exit_status", out))?;
    let failed = field("failed").unwrap_or("0");
    let failed_code = failed.split_whitespace().next().unwrap_or("0");
    Ok(if failed_code != "0" {
        JobState::Failed {
            reason: format!("failed {failed}"),
        }
    } else if exit != "0" {
        JobState::Failed {
            reason: format!("exit status {exit}"),
        }
    } else {
        JobState::Completed
    })
}

pub(crate) async fn state(q: &Query<'_>, id: &str) -> Result<JobState, BatchError> {
    let command = qstat_command(q.tools);
    let out = q.run(&command, "qstat", None).await?;
    if !out.success() {
        return Err(q.refused("qstat cannot tell the job state", &command, &out));
    }
    if let Some(s) = parse_qstat(&out.stdout_text(), id).map_err(|e| q.unparsed(&command, e))? {
        return Ok(s);
    }
    let qacct = format!("{} -j {}", q.tools.tool("qacct"), quote(id));
    let out = q.run(&qacct, "qacct", None).await?;
    if !out.success() {
        return Ok(JobState::Gone);
    }
    parse_qacct(&out.stdout_text()).map_err(|e| q.unparsed(&qacct, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(
            parse_job_id("Your job 123 (\"sweep\") has been submitted\n").unwrap(),
            "123"
        );
        assert_eq!(
            parse_job_id("Your job-array 77.1-4:1 (\"a\") has been submitted").unwrap(),
            "77"
        );
        assert_eq!(parse_job_id("88\n").unwrap(), "88");
        let err = parse_job_id("Unable to run job: Job was rejected.\n").unwrap_err();
        assert!(err.to_string().contains("Job was rejected"), "{err}");
        assert!(parse_job_id("Your job abc").is_err());
    }

    const LIST: &str = "\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
     12 0.55500 sweep      sweep        r     05/02/2025 10:00:01 all.q@sge-n01                      6
     13 0.00000 other      sweep        qw    05/02/2025 10:00:05                                    1
     14 0.00000 bad        sweep        Eqw   05/02/2025 10:00:06                                    1
     15 0.55500 going      sweep        dr    05/02/2025 10:00:06 all.q@sge-n02                      1
";

    #[test]
    fn qstat_lists() {
        assert_eq!(parse_qstat(LIST, "12").unwrap(), Some(JobState::Running));
        assert_eq!(
            parse_qstat(LIST, "13").unwrap(),
            Some(JobState::Pending {
                reason: "qw".into()
            })
        );
        assert!(matches!(
            parse_qstat(LIST, "14").unwrap(),
            Some(JobState::Failed { .. })
        ));
        assert_eq!(parse_qstat(LIST, "15").unwrap(), Some(JobState::Cancelled));
        assert_eq!(parse_qstat(LIST, "1").unwrap(), None);
        assert_eq!(parse_qstat("", "1").unwrap(), None);
        assert!(parse_qstat("error: commlib error", "1").is_err());
        assert!(parse_qstat("12\n", "12").is_err());
    }

    #[test]
    fn qacct_records() {
        let ok = "==============================================================\n\
                  qname        all.q\nhostname     sge-n01\njobnumber    12\n\
                  failed       0    \nexit_status  0\n";
        assert_eq!(parse_qacct(ok).unwrap(), JobState::Completed);
        let bad = "jobnumber    12\nfailed       0    \nexit_status  3\n";
        assert_eq!(
            parse_qacct(bad).unwrap(),
            JobState::Failed {
                reason: "exit status 3".into()
            }
        );
        let killed = "failed       100 : assumedly after job\nexit_status  137\n";
        assert_eq!(
            parse_qacct(killed).unwrap(),
            JobState::Failed {
                reason: "failed 100 : assumedly after job".into()
            }
        );
        assert!(parse_qacct("error: job id 12 not found").is_err());
    }
}
