//! Job scripts and submit commands of every scheduler, compared with the
//! files in `tests/golden/`. `UPDATE_GOLDEN=1 cargo test` rewrites them.

use std::path::PathBuf;

use actogrid_acquisition::batch::{BatchError, Scheduler, SchedulerKind};
use actogrid_acquisition::exec::RuntimeCommand;
use actogrid_descriptor::model::ProcessKind;
use actogrid_descriptor::{Descriptor, LoadOptions, load_str};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn descriptor() -> Descriptor {
    let path = golden_dir().join("schedulers.xml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = load_str(&path, &text, &LoadOptions::default());
    match loaded.into_valid() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

fn process<'a>(d: &'a Descriptor, id: &str) -> &'a ProcessKind {
    &d.processes
        .iter()
        .find(|p| *p.id == id)
        .unwrap_or_else(|| panic!("no process {id}"))
        .kind
}

fn runtime() -> RuntimeCommand {
    RuntimeCommand {
        program: "/opt/app/bin/app".into(),
        args: vec!["node".into(), "--deployer".into(), "10.0.0.1:7000".into()],
        env: vec![
            ("ACTOGRID_TOKEN".into(), "s3cr3t value".into()),
            ("RUST_LOG".into(), "info".into()),
        ],
        credentials: None,
    }
}

fn check(name: &str, actual: &str, mismatches: &mut Vec<String>) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        mismatches.push(format!(
            "--- {} (expected)\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
}

#[test]
fn scripts_and_commands_match_the_golden_files() {
    let d = descriptor();
    let cases = [
        ("slurm_full", SchedulerKind::Slurm, Some(32)),
        ("slurm_minimal", SchedulerKind::Slurm, Some(1)),
        ("pbs_count", SchedulerKind::Pbs, Some(16)),
        ("pbs_hosts", SchedulerKind::Pbs, Some(3)),
        ("lsf_parallel", SchedulerKind::Lsf, Some(16)),
        ("lsf_single", SchedulerKind::Lsf, Some(1)),
        ("oar_ssh", SchedulerKind::Oar, None),
        ("sge_parallel", SchedulerKind::GridEngine, Some(6)),
        ("sge_single", SchedulerKind::GridEngine, Some(1)),
    ];
    let mut mismatches = Vec::new();
    for (id, kind, runtimes) in cases {
        let scheduler = Scheduler::from_process(process(&d, id)).unwrap();
        assert_eq!(scheduler.kind(), kind, "{id}");
        assert_eq!(scheduler.runtimes_per_job(), runtimes, "{id}");
        let files = scheduler.files("/tmp/actogrid-jobs", id);
        let script = scheduler.script(&runtime(), &files);
        check(&format!("{id}.sh"), &script, &mut mismatches);
        let commands = format!(
            "submit: {}\ncancel: {}\nscript: {}\noutput: {}\nerror: {}\n",
            scheduler.submit_command(&files),
            scheduler.cancel_command("123"),
            files.script,
            files.output,
            files.error,
        );
        check(&format!("{id}.commands"), &commands, &mut mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn generated_scripts_are_valid_shell() {
    let d = descriptor();
    for p in &d.processes {
        let Ok(scheduler) = Scheduler::from_process(&p.kind) else {
            continue;
        };
        let script = scheduler.script(&runtime(), &scheduler.files("/tmp/x", &p.id));
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}\n{script}",
            *p.id,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn other_processes_are_not_schedulers() {
    let d = descriptor();
    let err = Scheduler::from_process(process(&d, "runtime")).unwrap_err();
    assert!(matches!(err, BatchError::NotAScheduler { .. }));
    assert_eq!(
        err.to_string(),
        "`jvmProcess` is not a batch scheduler process"
    );
}

#[test]
fn grid_engine_needs_a_parallel_environment_for_several_slots() {
    let d = descriptor();
    let ProcessKind::GridEngine(mut p) = process(&d, "sge_parallel").clone() else {
        panic!("not grid engine");
    };
    p.parallel_environment = None;
    let err = Scheduler::from_process(&ProcessKind::GridEngine(p)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("grid engine: hostsNumber 6 needs a parallelEnvironment"),
        "{err}"
    );
}
