//! Every realistic mistake of `tests/data/invalid/` is reported with the
//! right code, at the right line and column, with a message that names it,
//! and without follow-up errors: one mistake, one error.
//!
//! A case is one file holding one mistake. The `several_*` files (and a few
//! mistakes that really are two problems) hold several, all reported in one
//! run. Files meant to be included by a case are listed in [`HELPERS`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use actogrid_descriptor::{Diagnostic, LoadOptions, Loaded, Severity, load, load_str};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/invalid");

/// Files of the data directory that are not cases: included by one.
const HELPERS: &[&str] = &["include_cycle_site"];

/// Program variables (`--var`) given when a case is loaded.
const PROGRAM_VARIABLES: &[(&str, &str, &str)] = &[
    ("var_on_descriptor_variable", "partition", "debug"),
    ("empty_program_variable", "run.id", ""),
];

/// One mistake per file: file, code, line, column, part of the message.
#[rustfmt::skip]
const CASES: &[(&str, &str, u32, u32, &str)] = &[
    // Not well-formed XML: reported alone, where the parser stopped.
    ("xml_unclosed_tag",               "xml-syntax",                13,  9, "<vmName> was opened at line 12"),
    ("xml_truncated",                  "xml-syntax",                 3,  2, "<ProActiveDescriptor> is never closed"),
    ("xml_mismatched_end_tag",         "xml-syntax",                22,  5, "expected `</jvms>`, but `</jvm>` was found"),
    ("xml_two_roots",                  "xml-syntax",                19,  2, "a second root element <ProActiveDescriptor>"),
    ("xml_text_after_root",            "xml-syntax",                18,  1, "text outside the root element"),
    ("xml_duplicate_attribute",        "xml-syntax",                30, 73, "attribute `hostname` is written twice in <sshProcess> (first at line 30, column 21)"),
    ("xml_unquoted_attribute",         "xml-syntax",                17, 40, "attribute value must be enclosed"),
    ("xml_unescaped_ampersand",        "xml-syntax",                30, 33, "`&` starts an entity reference that no `;` ends"),
    ("xml_wrong_root",                 "wrong-root",                 2,  2, "the root element is <GCMDeployment>"),
    // Structure: unknown, missing, misplaced or repeated elements and attributes.
    ("unknown_element_section",        "unknown-element",            4,  6, "<virtualNodeDefinition> in <componentDefinition>"),
    ("unknown_element_process",        "unknown-element",           27, 10, "<jvmProces> in <processDefinition>"),
    ("unknown_element_jvm_child",      "unknown-element",           18, 10, "<creaton> in <jvm>"),
    ("unknown_attribute_virtual_node", "unknown-attribute",          5, 55, "`minNodesNumber` on <virtualNode>"),
    ("unknown_attribute_ssh",          "unknown-attribute",         30, 58, "`usename` on <sshProcess>"),
    ("missing_attribute",              "missing-attribute",         30, 10, "<sshProcess> needs the attribute `hostname`"),
    ("command_path_as_text",           "missing-attribute",         28, 12, "<commandPath> takes its value in the attribute `value`, not as text"),
    ("empty_required_attribute",       "empty-value",               19, 36, "`refid` of <processReference> is empty"),
    ("text_in_element_only",           "unexpected-text",           12, 38, "<jvmSet> holds elements, not text"),
    ("missing_process_reference",      "missing-element",           27, 10, "<sshProcess> has no <processReference>"),
    ("jvm_creation_and_acquisition",   "conflicting-elements",      21, 10, "<jvm> has both <creation> and <acquisition>"),
    ("jvm_without_source",             "missing-element",           24,  8, "runtime `spareJvm` says neither how to create nor how to acquire it"),
    ("sequence_service_not_first",     "misplaced-element",         32, 12, "<serviceReference> must come first"),
    ("hierarchical_without_inner",     "missing-element",           30, 10, "<hierarchicalProcess> has no <hierarchicalReference>"),
    ("hierarchical_forwarder_not_jvm", "bad-forwarder",             31, 36, "the forwarder of <hierarchicalProcess> `gateway` must be a jvmProcess"),
    // Values: numbers, booleans, durations, wall times, host ranges, ports, URLs.
    ("bad_timeout",                    "bad-value",                  5, 64, "timeout: `5 minutes` is not a duration"),
    ("timeout_spaced",                 "bad-value",                  5, 64, "timeout: `30 s` is not a duration"),
    ("timeout_zero",                   "bad-value",                  5, 64, "timeout: `0` is a duration of zero"),
    ("p2p_ttu_zero",                   "bad-value",                 27, 49, "TTU: `0s` is a duration of zero"),
    ("ft_ttc_zero",                    "bad-value",                 35, 23, "ttc: `0` is a duration of zero"),
    ("lookup_timeout_spaced",          "bad-value",                  8, 44, "timeout: `30 s` is not a duration"),
    ("bad_property",                   "bad-value",                  5, 44, "`single` is not one of unique, unique_singleAO, multiple, multiple_cyclic"),
    ("bad_boolean",                    "bad-value",                  5, 84, "waitForTimeout: `1` is not a boolean"),
    ("bad_asked_nodes",                "bad-value",                 17, 41, "askedNodes: `-4` is not a positive whole number"),
    ("bad_ssh_port",                   "bad-value",                 30, 79, "port: `22222222` is not a port number"),
    ("lookup_bad_port",                "bad-value",                 19, 68, "port: `http` is not a port number"),
    ("slurm_bad_walltime",             "bad-value",                 35, 23, "<walltime>: `25:99:00` is not a wall time"),
    ("slurm_walltime_spaced",          "bad-value",                 35, 23, "<walltime>: `02 : 00 : 00` is not a wall time"),
    ("slurm_tasks_per_node_zero",      "bad-value",                 34, 27, "<tasksPerNode>: `0` is zero"),
    ("pbs_bad_booking_duration",       "bad-value",                 34, 30, "<bookingDuration>: `2h30` is not a wall time"),
    ("host_range_backwards",           "bad-host-range",            30, 48, "the range 10-1 goes backwards"),
    ("host_range_zero_step",           "bad-host-range",            30, 52, "host range `[1-5;0]`: the step is zero"),
    ("padding_not_a_number",           "bad-value",                 30, 64, "padding: `x` is not a digit count"),
    ("relative_path_origin",           "bad-value",                 34, 37, "relativePath origin `user.classpath` is not supported"),
    ("slurm_partition_newline",        "bad-character",             30, 57, "partition \"compute\\ntouch /tmp/owned\" holds a newline"),
    ("pbs_queue_newline",              "bad-character",             30, 28, "queue \"batch\\nrm -rf ~\" holds a newline"),
    ("ssh_hostname_option",            "bad-character",             30, 31, "hostname \"-oProxyCommand=sh -c id\" holds a leading `-`"),
    ("registry_lookup_bad_url",        "bad-value",                 27, 33, "`http://spare.example.com:7000/SpareNode` is not a runtime URL"),
    ("registry_lookup_rmi_bad_port",   "bad-value",                 27, 33, "url: `70000` is not a port number"),
    ("oar_booked_nodes_access_unknown", "bad-value",                30, 40, "bookedNodesAccess: `telnet` is not one of oarsh, ssh, rsh"),
    // Variables and the contract.
    ("undefined_variable",             "undefined-variable",        33, 31, "variable `login_host` is not defined"),
    ("empty_variable",                 "empty-variable",             4, 31, "descriptorVariable `partition` has no value"),
    ("empty_program_variable",         "empty-variable",            31, 38, "variable `run.id` is empty"),
    ("program_variable_not_given",     "empty-variable",             5, 28, "programVariable `run.id` has no value"),
    ("variable_value_undefined",       "undefined-variable",         4, 49, "variable `queue` is not defined"),
    ("program_variable_with_value",    "variable-contract",          4, 44, "programVariable `workers` cannot be given a value in the descriptor"),
    ("var_on_descriptor_variable",     "variable-contract",          4, 49, "the program sets `partition`"),
    ("variable_redefined",             "variable-redefined",         6, 28, "declared again as programVariable but was a descriptorDefaultVariable (line 4)"),
    ("unclosed_variable_reference",    "bad-variable-reference",    31, 31, "`${` is never closed by `}`"),
    ("include_cycle",                  "include-cycle",              5, 29, "`include_cycle.xml` is already being included"),
    // References between definitions.
    ("unresolved_vm_name",             "unresolved-reference",      12, 26, "no runtime (jvm) is named `solverjob`"),
    ("unresolved_process_reference",   "unresolved-reference",      31, 36, "no process definition is named `clusterRuntim`"),
    ("unknown_technical_service",      "unresolved-reference",       5, 89, "no technical service is named `tracing`"),
    ("register_unknown_virtual_node",  "unresolved-reference",       9, 28, "no virtual node is named `Worker`"),
    ("lookup_unknown_virtual_node",    "unresolved-reference",      20, 26, "no acquired virtual node is named `Archives`"),
    ("file_transfer_unresolved",       "unresolved-reference",       5, 76, "no file transfer is named `input`"),
    ("acquisition_of_fault_tolerance", "wrong-service-kind",        19, 36, "service `ftCic` is a faultTolerance: it cannot provide runtimes"),
    ("ft_service_is_p2p",              "wrong-service-kind",         5, 68, "ftServiceId names `p2pService`, a P2PService"),
    ("process_cycle",                  "process-cycle",             29, 36, "sshGatewayA → sshGatewayB → sshGatewayA"),
    ("process_self_loop",              "process-cycle",             31, 36, "sshCluster → sshCluster"),
    // Uniqueness and cardinalities.
    ("duplicate_virtual_node",         "duplicate-id",               7, 26, "virtual node `Workers` is defined twice (first at line 5)"),
    ("duplicate_jvm",                  "duplicate-id",              22, 18, "runtime (jvm) `workerJvm` is defined twice (first at line 17)"),
    ("duplicate_process_definition",   "duplicate-id",              34, 30, "process definition `sshCluster` is defined twice (first at line 29)"),
    ("duplicate_technical_service",    "duplicate-id",              35, 37, "technical service `loadBalancing` is defined twice (first at line 32)"),
    ("virtual_node_mapped_twice",      "duplicate-id",              15, 25, "virtual node `Workers` is mapped twice (first at line 10)"),
    ("unique_two_runtimes",            "unique-with-many-runtimes", 10, 25, "`Coordinator` is unique but is mapped to 2 runtimes"),
    ("unique_process_list",            "unique-with-many-runtimes", 10, 25, "`Coordinator` is unique_singleAO but is mapped to 16 runtimes"),
    ("min_node_number_unreachable",    "min-nodes-unreachable",      5, 26, "needs at least 40 nodes but its mapping provides 28"),
    // ProActive features actogrid does not have, and services.
    ("builtin_service_class_typo",     "unknown-service-class",     32, 59, "`actogrid.LoadBalancng` is not a built-in technical service"),
    ("cluster_fork_process",           "unsupported-element",       30, 10, "<clusterForkProcess> is not supported"),
    ("globus_process",                 "unsupported-element",       30, 10, "<globusProcess> is not supported by actogrid, and virtual node `Workers` is deployed through it"),
    ("globus_behind_ssh",              "unsupported-element",       35, 10, "<globusProcess> is not supported by actogrid, and virtual node `Workers` is deployed through it"),
    ("proactive_scheduler",            "unsupported-element",       27, 10, "<ProActiveScheduler> is not supported"),
    ("p2p_without_nodes_asked",        "missing-attribute",         27, 10, "<P2PService> needs the attribute `nodesAsked`"),
    ("p2p_nodes_asked_zero",           "bad-value",                 27, 33, "nodesAsked: `0` is zero"),
    ("p2p_peer_bad_port",              "bad-value",                 30, 19, "peer: `71000` is not a port number"),
    ("p2p_peer_http_scheme",           "bad-value",                 30, 19, "peers are reached with actogrid's protocol only"),
    ("ft_protocol_unknown",            "bad-value",                 33, 27, "protocol: `foo` is neither cic nor pml"),
    ("ft_without_protocol",            "missing-element",           32, 10, "<faultTolerance> has no <protocol>"),
    // MPI runs: a dependentProcessSequence books hosts, then an mpiProcess runs on them.
    ("mpi_without_command_path",       "missing-element",           41, 10, "<mpiProcess> has no <commandPath>"),
    ("mpi_without_file_name",          "missing-attribute",         41, 10, "<mpiProcess> needs the attribute `mpiFileName`"),
    ("mpi_options_unclosed_quote",     "bad-value",                 41, 61, "mpiCommandOptions: `-x 'A=b` opens a single quote that is never closed"),
    ("mpi_process_number_zero",        "bad-value",                 44, 28, "<processNumber>: `0` is zero"),
    ("mpi_sequence_second_not_mpi",    "unsupported-sequence",      32, 36, "runs sshProcess `other` on the booked hosts: only an <mpiProcess> can run there"),
    ("mpi_sequence_books_nothing",     "unsupported-sequence",      31, 36, "books hosts with `gridRuntime`: a jvmProcess books no host"),
    ("mpi_sequence_pbs_booking",       "unsupported-sequence",      31, 36, "an MPI run inside a pbsProcess allocation is not supported yet"),
    ("mpi_sequence_service_first",     "unsupported-sequence",      31, 36, "starts with service `lookup`: actogrid cannot book hosts for an MPI run from a service"),
    ("mpi_outside_sequence",           "misplaced-mpi",             19, 36, "<mpiProcess> `kernel` is the creation of runtime `gridJvm`"),
];

/// Files with several mistakes, all reported in one run: file, then every
/// error in file order as code and line.
#[rustfmt::skip]
const SEVERAL: &[(&str, &[(&str, u32)])] = &[
    ("several_bad_values", &[("bad-value", 6), ("bad-value", 18), ("bad-value", 31), ("bad-value", 39), ("bad-value", 41)]),
    ("several_bad_references", &[("unresolved-reference", 5), ("unresolved-reference", 10), ("unresolved-reference", 14), ("unresolved-reference", 31)]),
    ("several_structure_mistakes", &[("unknown-attribute", 5), ("unknown-element", 28), ("missing-attribute", 36)]),
    ("several_variable_mistakes", &[("variable-contract", 5), ("empty-variable", 6), ("undefined-variable", 33)]),
    // Both `<jvm>` written outside `<jvms>` are reported, and no vmName as unresolved.
    ("jvm_outside_jvms", &[("unknown-element", 23), ("unknown-element", 28)]),
    // The virtual node the map names is really declared nowhere.
    ("missing_component_definition", &[("missing-element", 3), ("unresolved-reference", 6)]),
    // The variable the unreadable file would have defined is used.
    ("missing_include", &[("include-unreadable", 5), ("undefined-variable", 34)]),
];

/// The options a case is loaded with: its program variables.
fn options(name: &str) -> LoadOptions {
    PROGRAM_VARIABLES
        .iter()
        .filter(|(case, _, _)| *case == name)
        .fold(LoadOptions::default(), |options, (_, var, value)| {
            options.var(*var, *value)
        })
}

/// Loads the case `tests/data/invalid/<name>.xml`.
fn load_case(name: &str) -> Loaded {
    load(
        PathBuf::from(DATA).join(format!("{name}.xml")),
        &options(name),
    )
}

fn errors(loaded: &Loaded) -> Vec<&Diagnostic> {
    loaded.diagnostics.iter().filter(|d| d.is_error()).collect()
}

/// Every case name of the data directory, sorted (helpers left out).
fn case_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(DATA)
        .expect("the data directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .filter(|name| !HELPERS.contains(&name.as_str()))
        .collect();
    names.sort();
    names
}

#[test]
fn each_mistake_is_one_error_at_its_place() {
    let mut failures = Vec::new();
    for &(name, code, line, col, message) in CASES {
        let loaded = load_case(name);
        let errors = errors(&loaded);
        let found = match errors.as_slice() {
            [one] => one,
            _ => {
                failures.push(format!(
                    "{name}: expected one error, got {}:\n{}",
                    errors.len(),
                    loaded.diagnostics.render(&loaded.sources)
                ));
                continue;
            }
        };
        let at = found.span.map(|s| (s.line, s.col));
        if found.code != code || at != Some((line, col)) || !found.message.contains(message) {
            failures.push(format!(
                "{name}: expected {code} at {line}:{col} with \"{message}\", got {} at {at:?}: {}",
                found.code, found.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn files_with_several_mistakes_report_all_of_them_in_one_run() {
    for &(name, expected) in SEVERAL {
        let loaded = load_case(name);
        let found: Vec<(&str, u32)> = errors(&loaded)
            .iter()
            .map(|d| (d.code, d.span.map_or(0, |s| s.line)))
            .collect();
        assert_eq!(
            found,
            expected,
            "{name}:\n{}",
            loaded.diagnostics.render(&loaded.sources)
        );
    }
}

#[test]
fn every_file_of_the_data_directory_is_a_case() {
    let listed: Vec<&str> = CASES
        .iter()
        .map(|c| c.0)
        .chain(SEVERAL.iter().map(|s| s.0))
        .collect();
    let files = case_files();
    let unlisted: Vec<&String> = files
        .iter()
        .filter(|f| !listed.contains(&f.as_str()))
        .collect();
    let missing: Vec<&&str> = listed
        .iter()
        .filter(|l| !files.iter().any(|f| f == *l))
        .collect();
    assert!(unlisted.is_empty(), "files without a case: {unlisted:?}");
    assert!(missing.is_empty(), "cases without a file: {missing:?}");
    assert!(CASES.len() + SEVERAL.len() >= 45, "the corpus shrank");
}

#[test]
fn every_error_has_a_position_and_a_hint() {
    let mut failures = Vec::new();
    for name in case_files() {
        let loaded = load_case(&name);
        for d in errors(&loaded) {
            if d.span.is_none() || d.hint.as_deref().is_none_or(str::is_empty) {
                failures.push(format!(
                    "{name}: {} `{}` lacks a span or a hint",
                    d.code, d.message
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_case_panics_even_cut_short() {
    let mut failures = Vec::new();
    for name in case_files() {
        let path = PathBuf::from(DATA).join(format!("{name}.xml"));
        let text = std::fs::read_to_string(&path).expect("the case file");
        // The whole file, then the file cut at a few places: half-written
        // files are what an editor integration sees most.
        let cuts = (0..text.len())
            .step_by(61)
            .filter(|&at| text.is_char_boundary(at))
            .chain([text.len()]);
        for at in cuts {
            let run = catch_unwind(AssertUnwindSafe(|| {
                load_str(&path, &text[..at], &options(&name))
            }));
            match run {
                Ok(loaded) if at < text.len() || !loaded.is_valid() => {}
                Ok(_) => failures.push(format!("{name}: reported valid")),
                Err(_) => failures.push(format!("{name}: panics when cut at byte {at}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_include_cycle_is_reported_in_the_file_that_closes_it() {
    let loaded = load_case("include_cycle");
    let [error] = errors(&loaded)[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    let span = error.span.expect("a position");
    let file = loaded.sources.file(span.file).path();
    assert!(
        file.ends_with("include_cycle_site.xml"),
        "{}",
        file.display()
    );
    // The variable the included file defines is still usable.
    assert!(
        loaded
            .descriptor
            .variables
            .iter()
            .any(|v| *v.name == "frontend.host"),
        "{:?}",
        loaded.descriptor.variables
    );
}

#[test]
fn a_missing_include_names_the_file_it_looked_for() {
    let loaded = load_case("missing_include");
    let error = errors(&loaded)[0];
    assert_eq!(error.code, "include-unreadable");
    assert!(
        error.message.contains("site/frontend.xml"),
        "{}",
        error.message
    );
}

#[test]
fn a_descriptor_that_cannot_be_read_is_one_error_without_a_position() {
    let loaded = load(
        PathBuf::from(DATA).join("no_such_descriptor.xml"),
        &LoadOptions::default(),
    );
    let [error] = errors(&loaded)[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(
        (error.code, error.severity, error.span),
        ("unreadable", Severity::Error, None)
    );
    assert!(error.hint.is_some());
    assert!(
        loaded
            .diagnostics
            .render(&loaded.sources)
            .contains("no_such_descriptor.xml")
    );
}

#[test]
fn diagnostics_render_with_the_offending_line() {
    let loaded = load_case("host_range_backwards");
    let rendered = loaded.diagnostics.render(&loaded.sources);
    assert!(rendered.contains("error[bad-host-range]"), "{rendered}");
    assert!(
        rendered.contains("host_range_backwards.xml:30:48"),
        "{rendered}"
    );
    assert!(rendered.contains(r#"list="[10-1]""#), "{rendered}");
    assert!(
        rendered.contains("= hint: write ranges as [1-10]"),
        "{rendered}"
    );
}

#[test]
fn a_process_kind_actogrid_does_not_run_is_refused_only_when_a_mapped_virtual_node_needs_it() {
    let path = PathBuf::from(DATA).join("cluster_fork_process.xml");
    let text = std::fs::read_to_string(&path).expect("the case");
    // The same file, the virtual node now on the current process: the
    // clusterFork process is only reached by a runtime no mapping lists.
    let unmapped = text.replace(r#"<vmName value="labJvm"/>"#, "<currentJVM/>");
    assert_ne!(unmapped, text);
    let loaded = load_str(&path, &unmapped, &LoadOptions::default());
    assert!(
        errors(&loaded).is_empty(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    let warnings: Vec<(&str, u32)> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| (d.code, d.span.map_or(0, |s| s.line)))
        .collect();
    assert_eq!(
        warnings,
        [("unused-runtime", 17), ("unsupported-unused", 30)]
    );
}
