//! The example runs as its README says: the nodes that have `sh` are
//! accepted and tagged, the ones without `blender` refused.

#[test]
fn the_example_accepts_and_refuses_as_documented() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actogrid-example-services"))
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("accepted, `sh` is /").count(), 2, "{stdout}");
    assert!(
        stdout.contains("Renderers: refused, as expected"),
        "{stdout}"
    );
    // It fails as soon as the first refusal makes two nodes unreachable.
    assert!(stdout.contains("has no `blender` on its PATH"), "{stdout}");
}

/// The `actogrid` command built beside this example's binary.
fn actogrid_command() -> std::path::PathBuf {
    let example = std::path::Path::new(env!("CARGO_BIN_EXE_actogrid-example-services"));
    let cli = example.with_file_name("actogrid");
    assert!(
        cli.exists(),
        "{} is missing: build the workspace (`cargo build -p actogrid`)",
        cli.display()
    );
    cli
}

fn descriptor() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("services.xml")
}

/// `actogrid validate --program` knows the application's services: a
/// misspelt argument is a warning with the right name, a misspelt class
/// an error with the right one.
#[test]
fn the_command_checks_the_services_of_the_program() {
    let program = env!("CARGO_BIN_EXE_actogrid-example-services");
    let ok = std::process::Command::new(actogrid_command())
        .args(["validate", "--program", program])
        .arg(descriptor())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("valid (0 error(s), 0 warning(s))"), "{text}");

    let dir = std::env::temp_dir().join(format!("actogrid-services-typos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typos = dir.join("typos.xml");
    let original = std::fs::read_to_string(descriptor()).unwrap();
    let misspelt = original
        .replace(
            r#"<arg name="command" value="sh"/>"#,
            r#"<arg name="comand" value="sh"/><arg name="command" value="sh"/>"#,
        )
        .replace(
            r#"id="needsBlender" class="example.NeedsTool""#,
            r#"id="needsBlender" class="example.NeedTool""#,
        );
    std::fs::write(&typos, misspelt).unwrap();
    let out = std::process::Command::new(actogrid_command())
        .args(["validate", "--program", program])
        .arg(&typos)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("no argument `comand`"), "{text}");
    assert!(text.contains("did you mean `command`?"), "{text}");
    assert!(
        text.contains("no technical service class `example.NeedTool`"),
        "{text}"
    );
    assert!(text.contains("did you mean `example.NeedsTool`?"), "{text}");

    // A binary that is not an actogrid application says so.
    let out = std::process::Command::new(actogrid_command())
        .args(["validate", "--program", "/bin/true"])
        .arg(descriptor())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is it an actogrid application"), "{text}");
}

/// `actogrid deploy --program` runs the application's binary as the
/// runtimes: its own service accepts the nodes that have `sh` and refuses
/// those without `blender`; Ctrl-C tears everything down.
#[test]
fn the_command_deploys_with_the_services_of_the_program() {
    use std::io::BufRead as _;
    let program = env!("CARGO_BIN_EXE_actogrid-example-services");
    // Without the program, the command does not know the class.
    let out = std::process::Command::new(actogrid_command())
        .args(["deploy", "--no-progress"])
        .arg(descriptor())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("example.NeedsTool"), "{text}");

    let mut child = Killed(
        std::process::Command::new(actogrid_command())
            .args(["deploy", "--no-progress", "--program", program])
            .arg(descriptor())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(all);
    });
    let mut encoders = Vec::new();
    for line in std::io::BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(url) = line.strip_prefix("Encoders\t") {
            encoders.push(url.to_owned());
        }
        if encoders.len() == 2 {
            break;
        }
    }
    // Both runtimes of the program are there, then Ctrl-C.
    let pids = program_pids(program);
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status();
    let status = child.0.wait().unwrap();
    let stderr = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_default();
    assert_eq!(encoders.len(), 2, "{stderr}");
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("has no `blender` on its PATH"), "{stderr}");
    assert!(pids.len() >= 2, "the runtimes run the program: {pids:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "runtimes left after the teardown: {pids:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed (and waited for) when dropped, so that a
/// failing test leaves no deployer behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The processes running `program` now.
fn program_pids(program: &str) -> Vec<u32> {
    let target = std::fs::canonicalize(program).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == target))
        .collect()
}
