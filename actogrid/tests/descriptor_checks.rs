//! What a descriptor asks of the program, checked before anything starts:
//! technical-service classes and arguments, and `<runtimeSettings>`, each
//! mistake reported at its own line, by `Deployment::load` and by
//! `check_descriptor` (what `actogrid validate` runs).

mod support;

use actogrid::descriptor::{Diagnostic, LoadOptions, Loaded, Severity};
use actogrid::{Args, DeployError, NodeContext, ServiceError, TechnicalService, check_descriptor};
use support::{TempDir, local_descriptor, runtime, with_services};

/// A class this test binary registers: an application's own service.
#[derive(Default)]
struct Tagger;

impl TechnicalService for Tagger {
    fn init(&mut self, _: &Args) -> Result<(), ServiceError> {
        Ok(())
    }
    fn apply(&self, _: &NodeContext) -> Result<(), ServiceError> {
        Ok(())
    }
}

actogrid::technical_service!("checks.Tagger", Tagger);

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> u32 {
    let at = text.find(needle).expect("the needle is in the text");
    text[..at].matches('\n').count() as u32 + 1
}

fn check(text: &str) -> (Loaded, TempDir) {
    let dir = TempDir::new("checks");
    let path = dir.write("d.xml", text);
    (check_descriptor(&path, &LoadOptions::default()), dir)
}

fn find<'a>(loaded: &'a Loaded, code: &str) -> Vec<&'a Diagnostic> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == code)
        .collect()
}

fn with_settings(descriptor: &str, settings: &str) -> String {
    descriptor.replacen(
        "<componentDefinition>",
        &format!("<runtimeSettings>\n{settings}\n</runtimeSettings>\n<componentDefinition>"),
        1,
    )
}

#[test]
fn a_refused_argument_is_reported_at_its_arg() {
    let defs = "<technicalServiceDefinition id=\"lb\" class=\"actogrid.LoadBalancing\">\n\
                <arg name=\"period\" value=\"250\"/>\n\
                <arg name=\"overload\" value=\"1.5\"/>\n\
                </technicalServiceDefinition>";
    let text = with_services(&local_descriptor(1, 1, "", None), "lb", defs);
    let (loaded, _dir) = check(&text);
    let refused = find(&loaded, "service-refused-arguments");
    let [error] = refused[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(
        error.span.map(|s| s.line),
        Some(line_of(&text, "<arg name=\"overload\"")),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert!(
        error.message.contains("argument `overload`"),
        "{}",
        error.message
    );
}

#[test]
fn unknown_arguments_are_warnings_with_the_closest_name() {
    let defs = "<technicalServiceDefinition id=\"lb\" class=\"actogrid.LoadBalancing\">\n\
                <arg name=\"metric\" value=\"cpu\"/>\n\
                <arg name=\"perod\" value=\"500\"/>\n\
                </technicalServiceDefinition>\n\
                <technicalServiceDefinition id=\"env\" class=\"actogrid.Environment\">\n\
                <arg name=\"anything\" value=\"goes\"/>\n\
                </technicalServiceDefinition>";
    let text = with_services(&local_descriptor(1, 1, "", None), "lb env", defs);
    let (loaded, _dir) = check(&text);
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    let warnings = find(&loaded, "unknown-service-argument");
    let found: Vec<(u32, Severity, &str)> = warnings
        .iter()
        .map(|d| {
            (
                d.span.map_or(0, |s| s.line),
                d.severity,
                d.hint.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, line_of(&text, "name=\"metric\""));
    assert_eq!(found[0].1, Severity::Warning);
    assert!(
        found[0].2.contains("overload, underload, period"),
        "{}",
        found[0].2
    );
    assert_eq!(found[1].0, line_of(&text, "name=\"perod\""));
    assert!(
        found[1].2.starts_with("did you mean `period`?"),
        "{}",
        found[1].2
    );
}

#[test]
fn runtime_settings_are_checked_by_the_runtime_rules_at_their_lines() {
    let settings = "<setting name=\"heartbeatTimout\" value=\"30s\"/>\n\
                    <setting name=\"max_message_size\" value=\"lots\"/>\n\
                    <setting name=\"callTimeout\" value=\"none\"/>";
    let text = with_settings(&local_descriptor(1, 1, "", None), settings);
    let (loaded, _dir) = check(&text);
    let unknown = find(&loaded, "unknown-runtime-setting");
    assert_eq!(
        unknown.len(),
        1,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert_eq!(
        unknown[0].span.map(|s| s.line),
        Some(line_of(&text, "heartbeatTimout"))
    );
    assert_eq!(
        unknown[0].hint.as_deref(),
        Some("did you mean `heartbeat_timeout`?")
    );
    let bad = find(&loaded, "bad-runtime-setting");
    assert_eq!(
        bad.len(),
        1,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert_eq!(bad[0].span.map(|s| s.line), Some(line_of(&text, "lots")));
    assert!(bad[0].message.contains("`lots`"), "{}", bad[0].message);
    assert_eq!(loaded.diagnostics.count(Severity::Error), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_keeps_its_checked_settings_in_an_order_that_applies() {
    // A longer heartbeat interval than the default timeout is only valid
    // with the timeout given below it: the file's order must not matter.
    let settings = "<setting name=\"heartbeatInterval\" value=\"5s\"/>\n\
                    <setting name=\"heartbeat-timeout\" value=\"20s\"/>";
    let dir = TempDir::new("checks-settings");
    let path = dir.write(
        "d.xml",
        &with_settings(&local_descriptor(1, 1, "", None), settings),
    );
    let rt = runtime().await;
    let d = actogrid::Deployment::load_with(&path, LoadOptions::default(), support::options(&rt))
        .await
        .expect("the descriptor loads");
    let got = d.runtime_settings().to_vec();
    let mut config = actogrid::Config::default();
    for (name, value) in &got {
        config.set(name, value).expect("applies in this order");
    }
    assert_eq!(config.heartbeat_interval, std::time::Duration::from_secs(5));
    assert_eq!(config.heartbeat_timeout, std::time::Duration::from_secs(20));
    let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["heartbeat_interval", "heartbeat_timeout"]);
    d.kill().await;
    rt.shutdown();
}

async fn load_error(text: &str) -> String {
    let dir = TempDir::new("checks-load");
    let path = dir.write("d.xml", text);
    let rt = runtime().await;
    // This test program is the application: its classes are the ones
    // checked (a program given as `program` is asked for its own).
    let options = actogrid::DeployOptions {
        program: None,
        ..support::options(&rt)
    };
    let err = actogrid::Deployment::load_with(&path, LoadOptions::default(), options)
        .await
        .unwrap_err();
    rt.shutdown();
    assert!(matches!(err, DeployError::Descriptor(_)), "{err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_builtin_class_stops_the_load_with_the_right_name() {
    let defs = r#"<technicalServiceDefinition id="env" class="actogrid.Enviroment"><arg name="a" value="b"/></technicalServiceDefinition>"#;
    let text = load_error(&with_services(
        &local_descriptor(1, 1, "", None),
        "env",
        defs,
    ))
    .await;
    assert!(
        text.contains("`actogrid.Enviroment` is not a built-in technical service"),
        "{text}"
    );
    assert!(
        text.contains("did you mean `actogrid.Environment`?"),
        "{text}"
    );
    assert!(text.contains("(1 error(s))"), "{text}");

    // The same file is an error for a stand-alone check too.
    let (loaded, _dir) = check(&with_services(
        &local_descriptor(1, 1, "", None),
        "env",
        defs,
    ));
    assert!(!loaded.is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_the_application_registers_are_not_called_unknown() {
    // Another mistake makes the load fail, so that every diagnostic is shown.
    let defs = r#"<technicalServiceDefinition id="tag" class="checks.Tagger"/>"#;
    let text = with_settings(
        &with_services(&local_descriptor(1, 1, "", None), "tag", defs),
        r#"<setting name="connectTimeout" value="soon"/>"#,
    );
    let shown = load_error(&text).await;
    assert!(shown.contains("bad-runtime-setting"), "{shown}");
    assert!(!shown.contains("checks.Tagger"), "{shown}");
    // A stand-alone tool cannot know the class: a note, not an error.
    let (loaded, _dir) = check(&text);
    let unknown = find(&loaded, "unknown-service-class");
    assert!(
        unknown.iter().all(|d| d.severity == Severity::Note),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
}

#[test]
fn the_descriptor_reference_lists_every_runtime_setting() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/descriptor.md"
    ))
    .expect("docs/descriptor.md");
    let section = doc
        .split("## Runtime settings")
        .nth(1)
        .expect("a Runtime settings section");
    for setting in actogrid::Config::settings() {
        let row = format!("| `{}` |", setting.name);
        assert!(
            section.contains(&row),
            "docs/descriptor.md does not list `{}`",
            setting.name
        );
        assert!(
            section.contains(setting.about),
            "docs/descriptor.md: `{}`: {}",
            setting.name,
            setting.about
        );
    }
}
