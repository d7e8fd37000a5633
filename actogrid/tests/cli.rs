//! The `actogrid validate` and `actogrid plan` commands, run as a user runs
//! them: the real binary, real files, exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn actogrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("actogrid-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write scratch file");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BROKEN: &str = r#"<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="workers" property="multiple" timeout="3 days"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="workers"><jvmSet><vmName value="jvm1"/></jvmSet></map></mapping>
    <jvms><jvm name="jvm1"><creation><processReference refid="local"/></creation></jvm></jvms>
  </deployment>
  <infrastructure>
    <processes>
      <processDefinition id="local"><jvmProces/></processDefinition>
    </processes>
  </infrastructure>
</ProActiveDescriptor>
"#;

#[test]
fn a_valid_descriptor_passes() {
    let out = actogrid(&[
        "validate",
        &repo("examples/descriptors/local.xml").display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("valid (0 error(s)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_invalid_descriptor_fails_with_every_problem_located_and_shown() {
    let scratch = Scratch::new("broken");
    let path = scratch.file("broken.xml", BROKEN);
    let out = actogrid(&["validate", &path]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    // Both mistakes in one run, each with file:line:column, the line itself and a hint.
    assert!(stdout.contains(&format!("{path}:4:64")), "{stdout}");
    assert!(stdout.contains(r#"timeout="3 days""#), "{stdout}");
    assert!(stdout.contains(&format!("{path}:13:38")), "{stdout}");
    assert!(stdout.contains("did you mean <jvmProcess>?"), "{stdout}");
    assert!(stdout.contains("invalid (2 error(s)"), "{stdout}");
}

#[test]
fn several_files_are_checked_in_one_run() {
    let scratch = Scratch::new("several");
    let broken = scratch.file("broken.xml", BROKEN);
    let good = repo("examples/descriptors/ssh.xml").display().to_string();
    let out = actogrid(&["validate", "--format", "short", &good, &broken]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with(&broken)).count(),
        2,
        "{stdout}"
    );
    assert!(
        !stdout.contains(&good),
        "the valid file has nothing to report: {stdout}"
    );
}

#[test]
fn json_output_is_for_tools() {
    let scratch = Scratch::new("json");
    let broken = scratch.file("broken.xml", BROKEN);
    let out = actogrid(&["validate", "--format", "json", &broken]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let report = &json[0];
    assert_eq!(report["file"], broken.as_str());
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 2);
    let first = &report["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "bad-value");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 64);
    assert!(first["hint"].is_string());
}

#[test]
fn a_missing_file_is_an_error_not_a_crash() {
    let out = actogrid(&["validate", "/nonexistent/deploy.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("cannot read /nonexistent/deploy.xml"));
}

#[test]
fn bad_command_lines_are_refused_with_a_reason() {
    let local = repo("examples/descriptors/local.xml").display().to_string();
    for (args, needle) in [
        (vec!["validate"], "FILE"),
        (
            vec!["validate", "--var", "novalue", &local],
            "is not NAME=VALUE",
        ),
        (
            vec!["validate", "--var", "bad name=1", &local],
            "is not a variable name",
        ),
        (vec!["validate", "--format", "xml", &local], "xml"),
        (vec!["plan"], "FILE"),
    ] {
        let out = actogrid(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn plan_shows_runtimes_and_follows_program_variables() {
    let local = repo("examples/descriptors/local.xml").display().to_string();
    let out = actogrid(&["plan", &local]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("virtual node `workers`"), "{plan}");
    assert!(plan.contains("total: 1 runtime(s), 2 node(s)"), "{plan}");
    let out = actogrid(&["plan", &local, "--var", "workers=8"]);
    assert!(
        text(&out.stdout).contains("total: 1 runtime(s), 8 node(s)"),
        "{}",
        text(&out.stdout)
    );
    // A value the contract refuses, or a bad number, makes the plan fail.
    let out = actogrid(&["plan", &local, "--var", "workers=zero"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("askedNodes"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn plan_dot_is_a_graphviz_graph() {
    let slurm = repo("descriptor/tests/data/valid/slurm.xml")
        .display()
        .to_string();
    let out = actogrid(&["plan", "--dot", &slurm]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(
        dot.starts_with("digraph deployment {") && dot.trim_end().ends_with('}'),
        "{dot}"
    );
    // Every edge joins declared vertices.
    let declared: Vec<&str> = dot
        .lines()
        .filter(|l| l.contains("[label=") && !l.contains("->"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let edges: Vec<(&str, &str)> = dot
        .lines()
        .filter(|l| l.contains("->"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.nth(1)?))
        })
        .collect();
    assert!(!edges.is_empty());
    for (a, b) in edges {
        assert!(
            declared.contains(&a) && declared.contains(&b),
            "{a} -> {b} in\n{dot}"
        );
    }
    assert!(dot.contains("slurm"), "{dot}");
}

#[test]
fn java_only_settings_are_one_warning_unless_verbose() {
    let lab = repo("descriptor/tests/data/valid/grid_lab.xml")
        .display()
        .to_string();
    let short = |args: &[&str]| {
        let out = actogrid(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let count = |out: &str, code: &str| out.lines().filter(|l| l.contains(code)).count();
    let summed = short(&["validate", "--format", "short", &lab]);
    assert_eq!(count(&summed, "[java-only-settings]"), 1, "{summed}");
    assert_eq!(count(&summed, "[ignored-element]"), 0, "{summed}");
    assert!(summed.contains("8 Java-only settings ignored"), "{summed}");
    let each = short(&["validate", "--format", "short", "--verbose", &lab]);
    assert_eq!(count(&each, "[java-only-settings]"), 0, "{each}");
    assert_eq!(count(&each, "[ignored-element]"), 8, "{each}");
    // plan prints the same warnings on stderr, and takes the same option.
    let out = actogrid(&["plan", "--verbose", &lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(count(&text(&out.stderr), "warning[ignored-element]"), 8);
}

#[test]
fn plan_of_an_invalid_descriptor_prints_diagnostics_and_no_plan() {
    let scratch = Scratch::new("plan");
    let broken = scratch.file("broken.xml", BROKEN);
    let out = actogrid(&["plan", &broken]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("unknown element <jvmProces>"));
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::Stdio;
    let scratch = Scratch::new("pipe");
    let broken = scratch.file("broken.xml", BROKEN);
    let mut args = vec!["validate".to_owned()];
    args.extend(std::iter::repeat_n(broken, 500));
    let mut child = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Like `| head -1`: the reader goes away before the output is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("it ends");
    assert_eq!(out.status.code(), Some(141));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_device_or_directory_is_refused_at_once() {
    for path in ["/dev/zero", "/tmp"] {
        let out = actogrid(&["validate", path]);
        assert_eq!(out.status.code(), Some(1), "{path}");
        assert!(
            text(&out.stdout).contains("not a regular file"),
            "{path}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn node_refuses_an_address_it_cannot_use() {
    let out = actogrid(&["node", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not host:port"),
        "{}",
        text(&out.stderr)
    );

    // A port already taken: the node says so and exits, it does not hang.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = actogrid(&["node", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&addr), "{}", text(&out.stderr));
}

#[test]
fn node_announces_its_url_and_stops_with_its_stdin() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    // Without credentials a node refuses to serve, and says how to give some.
    let out = actogrid(&["node", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("needs credentials"),
        "{}",
        text(&out.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args([
            "node",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "n1",
            "--exit-on-stdin-eof",
        ])
        .env("ACTOGRID_INSECURE_PLAINTEXT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(
        line.starts_with("actogrid node listening on actogrid://127.0.0.1:"),
        "{line}"
    );
    assert!(line.trim_end().ends_with("/n1"), "{line}");
    drop(child.stdin.take());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

/// A small valid descriptor with `extra` before `<componentDefinition>` and
/// `services` at the end.
fn with_parts(extra: &str, services: &str) -> String {
    format!(
        r#"<ProActiveDescriptor>
{extra}
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="workers" technicalServiceId="svc"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="workers"><jvmSet><currentJVM/></jvmSet></map></mapping>
  </deployment>
  <technicalServices>
{services}
  </technicalServices>
</ProActiveDescriptor>
"#
    )
}

#[test]
fn a_misspelt_builtin_service_and_bad_runtime_settings_fail_validation() {
    let scratch = Scratch::new("builtin-typo");
    let typo = scratch.file(
        "typo.xml",
        &with_parts(
            "",
            r#"    <technicalServiceDefinition id="svc" class="actogrid.Enviroment"/>"#,
        ),
    );
    let out = actogrid(&["validate", &typo]);
    let err = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did you mean `actogrid.Environment`?"),
        "{err}"
    );

    let settings = scratch.file(
        "settings.xml",
        &with_parts(
            r#"  <runtimeSettings>
    <setting name="heartbeatTimeout" value="30 parsecs"/>
  </runtimeSettings>"#,
            r#"    <technicalServiceDefinition id="svc" class="actogrid.LoadBalancing">
      <arg name="metric" value="cpu"/>
    </technicalServiceDefinition>"#,
        ),
    );
    let out = actogrid(&["validate", "--format", "short", &settings]);
    let err = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("settings.xml:3:"), "{err}");
    assert!(err.contains("bad-runtime-setting"), "{err}");
    // The unknown argument of a built-in service is a warning at its line.
    assert!(err.contains("settings.xml:15:"), "{err}");
    assert!(err.contains("unknown-service-argument"), "{err}");
}

#[test]
fn a_document_nested_two_hundred_thousand_deep_is_an_error_for_validate_and_plan() {
    let scratch = Scratch::new("deep");
    let mut deep = String::from("<ProActiveDescriptor>\n");
    deep.push_str(&"<a>".repeat(200_000));
    deep.push_str(&"</a>".repeat(200_000));
    deep.push_str("\n</ProActiveDescriptor>\n");
    let path = scratch.file("deep.xml", &deep);
    for command in ["validate", "plan"] {
        let out = actogrid(&[command, &path]);
        let err = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(err.contains("error[too-deep]"), "{command}: {err}");
        assert!(err.contains("deep.xml:2:"), "{command}: {err}");
        // The offending line (1.4 MB) is shown as a window around the column.
        assert!(
            err.len() < 4_000,
            "{command}: {} bytes of output",
            err.len()
        );
    }
}

#[test]
fn ft_server_refuses_what_it_cannot_serve_with() {
    // Outside any trust domain, no runtime would reach it: it says how to
    // join one.
    let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["ft-server", "--listen", "127.0.0.1:0"])
        .env_remove("ACTOGRID_TLS_AUTHORITY")
        .env_remove("ACTOGRID_CREDENTIALS")
        .env_remove("ACTOGRID_INSECURE_PLAINTEXT")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("trust domain")
            && text(&out.stderr).contains("ACTOGRID_TLS_AUTHORITY"),
        "{}",
        text(&out.stderr)
    );
    let out = actogrid(&["ft-server", "--heartbeat", "often"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("often"), "{}", text(&out.stderr));
    let out = actogrid(&["ft-server", "--name", "a/b"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("a/b"), "{}", text(&out.stderr));
    // Every interface, and no address to tell the runtimes.
    let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["ft-server", "--listen", "0.0.0.0:0"])
        .env("ACTOGRID_INSECURE_PLAINTEXT", "1")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--advertise"),
        "{}",
        text(&out.stderr)
    );
    // A store it cannot create: named, and no hang.
    let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["ft-server", "--store", "/proc/actogrid/ft.redb"])
        .env("ACTOGRID_INSECURE_PLAINTEXT", "1")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/proc/actogrid"),
        "{}",
        text(&out.stderr)
    );
}
