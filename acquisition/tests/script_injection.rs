//! Hostile values in every field of every scheduler process come out of the
//! job script inert: the script is run by `sh` with stand-ins for the
//! launchers (`srun`, `pbsdsh`, `blaunch`, `oarsh`, `qrsh`), and no injected
//! command runs while the runtime still receives its arguments and
//! environment byte for byte.

use std::path::{Path, PathBuf};

use actogrid_acquisition::batch::{BatchError, Scheduler};
use actogrid_acquisition::exec::{RuntimeCommand, quote};
use actogrid_descriptor::Spanned;
use actogrid_descriptor::model::{
    EnvVar, GridEngineProcess, Link, LsfProcess, OarProcess, PbsProcess, ProcessKind, SlurmProcess,
};

/// Attempts to run `touch pwned` from a value: separators, substitutions,
/// quotes that try to close the quoting, and line breaks.
const HOSTILE: &[&str] = &[
    "a; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "a\ntouch pwned",
    "a\rtouch pwned",
    "'; touch pwned; '",
    "\"; touch pwned; \"",
    "a\\\ntouch pwned",
    "|| touch pwned &",
];

/// A scratch directory with the launcher stand-ins; removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("actogrid-injection-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("scratch directory");
        let scratch = Scratch { dir };
        // Option-skipping launchers run the rest of their arguments; the
        // others are given one command string, run by a shell as the real
        // ones do.
        scratch.tool(
            "srun",
            "while case \"$1\" in --*) true;; *) false;; esac; do shift; done\nexec \"$@\"",
        );
        scratch.tool(
            "pbsdsh",
            "while [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"",
        );
        scratch.tool("blaunch", "exec sh -c \"$1\"");
        scratch.tool("oarsh", "shift\nexec sh -c \"$1\"");
        scratch.tool("qrsh", "shift 3\nexec sh -c \"$1\"");
        // The runtime: records its arguments (NUL-separated) and the value
        // of HOSTILE_ENV.
        let record = scratch.dir.join("record");
        scratch.tool(
            "runtime",
            &format!(
                "printf '%s\\0' \"$@\" > {out}\nprintf '%s' \"$HOSTILE_ENV\" > {out}.env",
                out = quote(record.to_str().expect("utf-8 path"))
            ),
        );
        std::fs::write(scratch.dir.join("nodefile"), "localhost\n").expect("node file");
        std::fs::write(
            scratch.dir.join("pe_hostfile"),
            "localhost 1 all.q@localhost UNDEFINED\n",
        )
        .expect("PE host file");
        scratch
    }

    fn tool(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("tool");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A working directory whose own name is hostile.
    fn work_dir(&self) -> PathBuf {
        let dir = self
            .dir
            .join("work $(touch pwned) `touch pwned`; touch pwned");
        std::fs::create_dir_all(&dir).expect("work directory");
        dir
    }

    /// Runs `script` with `sh`, the stand-ins first on the PATH.
    fn run(&self, script: &str) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.dir.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("OAR_NODEFILE", self.dir.join("nodefile"))
            .env("PE_HOSTFILE", self.dir.join("pe_hostfile"))
            .env_remove("HOSTILE_ENV")
            .output()
            .expect("sh runs")
    }

    /// Every file named `pwned` under the scratch directory.
    fn pwned(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.file_name().is_some_and(|n| n == "pwned") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out
    }

    fn recorded(&self) -> (Vec<String>, String) {
        let args = std::fs::read(self.dir.join("record")).unwrap_or_default();
        let args = String::from_utf8(args).expect("utf-8 arguments");
        let args = args
            .split_terminator('\0')
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let env = std::fs::read_to_string(self.dir.join("record.env")).unwrap_or_default();
        (args, env)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn link(hostile: &str) -> Link {
    Link {
        next: Spanned::new("runtime".to_owned(), Default::default()),
        environment: vec![EnvVar {
            name: "LINK_VALUE".into(),
            value: hostile.into(),
        }],
        command_path: None,
    }
}

/// Every scheduler with `hostile` in each of its free-text fields, built
/// by hand (as an API user could) rather than read from a descriptor.
fn schedulers(hostile: &str) -> Vec<(&'static str, Scheduler)> {
    let h = || Some(hostile.to_owned());
    vec![
        (
            "slurm",
            Scheduler::Slurm(SlurmProcess {
                job_name: h(),
                partition: h(),
                account: h(),
                nodes: 1,
                tasks_per_node: 1,
                cpus_per_task: None,
                walltime: None,
                memory: h(),
                extra_options: vec![hostile.to_owned()],
                output_file: h(),
                error_file: h(),
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "pbs",
            Scheduler::Pbs(PbsProcess {
                interactive: false,
                queue: h(),
                job_name: h(),
                hostlist: vec![hostile.to_owned()],
                hosts_number: None,
                processor_per_node: None,
                booking_duration: None,
                output_file: h(),
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "lsf",
            Scheduler::Lsf(LsfProcess {
                interactive: false,
                job_name: h(),
                queue: h(),
                hostlist: vec![hostile.to_owned()],
                processor: Some(2),
                resource_requirement: h(),
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "lsf, one slot",
            Scheduler::Lsf(LsfProcess {
                interactive: false,
                job_name: h(),
                queue: h(),
                hostlist: Vec::new(),
                processor: None,
                resource_requirement: h(),
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "oar",
            Scheduler::Oar(OarProcess {
                booked_nodes_access: None,
                interactive: false,
                queue: h(),
                resources: h(),
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "grid engine",
            Scheduler::GridEngine(GridEngineProcess {
                interactive: false,
                queue: h(),
                hosts_number: Some(1),
                booking_duration: None,
                parallel_environment: h(),
                hostlist: vec![hostile.to_owned()],
                script_path: None,
                link: link(hostile),
            }),
        ),
        (
            "grid engine, one slot",
            Scheduler::GridEngine(GridEngineProcess {
                interactive: false,
                queue: h(),
                hosts_number: None,
                booking_duration: None,
                parallel_environment: None,
                hostlist: Vec::new(),
                script_path: None,
                link: link(hostile),
            }),
        ),
    ]
}

#[test]
fn hostile_values_never_run_and_reach_the_runtime_intact() {
    let scratch = Scratch::new("scripts");
    let work = scratch.work_dir();
    let program = scratch.dir.join("bin/runtime").display().to_string();
    let mut failures = Vec::new();
    for hostile in HOSTILE {
        for (name, scheduler) in schedulers(hostile) {
            let runtime = RuntimeCommand {
                program: program.clone(),
                args: vec!["node".into(), (*hostile).to_owned(), String::new()],
                env: vec![("HOSTILE_ENV".into(), (*hostile).to_owned())],
                credentials: None,
            };
            let files = scheduler.files(work.to_str().expect("utf-8 path"), hostile);
            let script = scheduler.script(&runtime, &files);
            let _ = std::fs::remove_file(scratch.dir.join("record"));
            let _ = std::fs::remove_file(scratch.dir.join("record.env"));
            let out = scratch.run(&script);
            let pwned = scratch.pwned();
            if !pwned.is_empty() {
                failures.push(format!(
                    "{name} with {hostile:?}: ran `touch pwned`:\n{script}"
                ));
                for p in pwned {
                    let _ = std::fs::remove_file(p);
                }
            }
            let (args, env) = scratch.recorded();
            if args != runtime.args || env != *hostile {
                failures.push(format!(
                    "{name} with {hostile:?}: the runtime got {args:?} and {env:?}\nstderr: {}\n{script}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // Every directive is one line: a line that is not a comment is
            // one the generator wrote, never the rest of a value.
            for line in script.lines().filter(|l| !l.starts_with('#')) {
                if line.contains("touch pwned") && !line.contains('\'') {
                    failures.push(format!("{name} with {hostile:?}: bare line {line:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_line_break_in_a_field_is_refused_before_any_script_is_written() {
    let cases: Vec<(&str, ProcessKind)> = vec![
        (
            "partition",
            ProcessKind::Slurm(SlurmProcess {
                job_name: None,
                partition: Some("debug\ntouch pwned".into()),
                account: None,
                nodes: 1,
                tasks_per_node: 1,
                cpus_per_task: None,
                walltime: None,
                memory: None,
                extra_options: Vec::new(),
                output_file: None,
                error_file: None,
                script_path: None,
                link: link("ok"),
            }),
        ),
        (
            "queue",
            ProcessKind::Pbs(PbsProcess {
                interactive: false,
                queue: Some("batch\ntouch pwned".into()),
                job_name: None,
                hostlist: Vec::new(),
                hosts_number: None,
                processor_per_node: None,
                booking_duration: None,
                output_file: None,
                script_path: None,
                link: link("ok"),
            }),
        ),
    ];
    for (field, kind) in cases {
        match Scheduler::from_process(&kind) {
            Err(BatchError::BadValue { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}
