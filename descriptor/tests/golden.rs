//! Every realistic descriptor of `tests/data/valid/` loads, with no error,
//! into the expected model, diagnostics and plan.
//!
//! The expected output lives beside each file as `<name>.golden`. After an
//! intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! actogrid-descriptor --test golden` and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use actogrid_descriptor::model::{
    FtProtocol, NodesAsked, ProcessKind, RuntimeSource, ServiceKind, SshProcess, VnProperty,
};
use actogrid_descriptor::{Descriptor, Environment, LoadOptions, Loaded, load, plan};

fn data(name: &str) -> PathBuf {
    Path::new("tests/data/valid").join(name)
}

/// Program variables and environment are fixed so the output is the same everywhere.
fn options() -> LoadOptions {
    let env = BTreeMap::from([("HOME".to_owned(), "/home/tester".to_owned())]);
    LoadOptions {
        environment: Environment::Fixed(env),
        ..LoadOptions::default()
    }
    .var("run.id", "42")
}

fn load_valid(name: &str) -> Descriptor {
    let loaded = load(data(name), &options());
    assert!(
        loaded.is_valid(),
        "{name}:\n{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    loaded.descriptor
}

fn snapshot(loaded: &Loaded) -> String {
    let model = serde_json::to_string_pretty(&loaded.descriptor).expect("the model serialises");
    format!(
        "== diagnostics\n{}== plan\n{}== model\n{model}\n",
        loaded.diagnostics.render_short(&loaded.sources),
        plan::render_text(&loaded.descriptor),
    )
}

#[test]
fn every_valid_descriptor_matches_its_golden_file() {
    let mut names: Vec<PathBuf> = std::fs::read_dir("tests/data/valid")
        .expect("data directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "the corpus shrank: {names:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for path in names {
        let loaded = load(&path, &options());
        assert!(
            loaded.is_valid(),
            "{}:\n{}",
            path.display(),
            loaded.diagnostics.render(&loaded.sources)
        );
        let actual = snapshot(&loaded);
        let golden = path.with_extension("golden");
        if update {
            std::fs::write(&golden, &actual).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "{} differs from {}",
                path.display(),
                golden.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nregenerate with UPDATE_GOLDEN=1 and review the diff",
        mismatches.join("\n")
    );
}

#[test]
fn the_slide_forms_load() {
    let d = load_valid("p2p_slides.xml");
    // serviceRefid is the slides' technicalServiceId.
    assert!(
        d.virtual_nodes
            .iter()
            .any(|vn| !vn.technical_services.is_empty())
    );
    // acquisitionReference / acquisitionDefinition / NodesAsked="MAX" with rmi:// peers.
    let acquired = d.jvms.iter().find_map(|j| match &j.source {
        RuntimeSource::Acquisition(r) => Some(r.value.clone()),
        RuntimeSource::Creation(_) => None,
    });
    let service = d
        .service(&acquired.expect("an acquired runtime"))
        .expect("its service");
    let ServiceKind::P2p(p2p) = &service.kind else {
        panic!("a P2P service")
    };
    assert_eq!(p2p.nodes_asked, NodesAsked::Max);
    assert!(
        p2p.peers.iter().all(|p| p.value.port == 3000),
        "{:?}",
        p2p.peers
    );
    assert!(!d.technical_services.is_empty());
}

#[test]
fn the_proactive_32_forms_load() {
    let d = load_valid("proactive32.xml");
    assert!(
        d.virtual_nodes
            .iter()
            .any(|vn| vn.technical_services.len() == 2)
    );
    assert!(d.virtual_nodes.iter().any(|vn| vn.ft_service.is_some()));
    assert!(d.services.iter().any(
        |s| matches!(&s.kind, ServiceKind::FaultTolerance(ft) if ft.protocol == FtProtocol::Cic)
    ));
    assert!(d.services.iter().any(
        |s| matches!(&s.kind, ServiceKind::RegistryLookup(l) if l.url.starts_with("actogrid://"))
    ));
    assert!(
        !d.registers.is_empty() && !d.lookups.is_empty() && !d.acquired_virtual_nodes.is_empty()
    );
    assert!(!d.main_definitions.is_empty());
}

#[test]
fn the_forms_proactive_shipped_for_grid_labs_load() {
    let d = load_valid("grid_lab.xml");
    let urls: Vec<&str> = d
        .services
        .iter()
        .filter_map(|s| match &s.kind {
            ServiceKind::RegistryLookup(l) => Some(l.url.as_str()),
            _ => None,
        })
        .collect();
    // Java's //host/name: the registry's port 1099 unless one is given.
    assert_eq!(
        urls,
        [
            "actogrid://spare.lab.example.org:1099/SpareNode",
            "actogrid://backup.lab.example.org:2099/BackupNode"
        ]
    );
    // port="*", like host="*", is left to the program.
    let lookups: Vec<_> = d
        .lookups
        .iter()
        .map(|l| (l.host.as_deref(), l.port))
        .collect();
    assert_eq!(
        lookups,
        [(None, None), (Some("calendar.lab.example.org"), None)]
    );
    // A peer named by its host alone is reached on the overlay's default port.
    let default = actogrid_descriptor::model::p2p_defaults::PORT;
    let p2p = d
        .services
        .iter()
        .find_map(|s| match &s.kind {
            ServiceKind::P2p(p) => Some(p),
            _ => None,
        })
        .expect("a P2P service");
    let peers: Vec<(&str, u16)> = p2p
        .peers
        .iter()
        .map(|p| (p.value.host.as_str(), p.value.port))
        .collect();
    assert_eq!(
        peers,
        [
            ("peer1.lab.example.org", default),
            ("peer2.lab.example.org", default),
            ("peer3.lab.example.org", 7200)
        ]
    );
    let oar = d
        .processes
        .iter()
        .find_map(|p| match &p.kind {
            ProcessKind::Oar(o) => Some(o),
            _ => None,
        })
        .expect("an oarProcess");
    assert_eq!(oar.booked_nodes_access.as_deref(), Some("oarsh"));
    // The Globus and UNICORE sites and the scheduler no virtual node uses
    // are not part of the model.
    assert_eq!(d.processes.len(), 4);
    assert!(!d.services.iter().any(|s| s.id.value == "siteScheduler"));
}

#[test]
fn host_ranges_and_chains_expand() {
    let d = load_valid("ssh_hosts.xml");
    let list = d
        .processes
        .iter()
        .find_map(|p| match &p.kind {
            ProcessKind::ProcessList(l) => Some(l),
            _ => None,
        })
        .expect("a processList");
    // [1-16;1]^[5,7] with padding 2: 14 hosts, none of 05 and 07.
    assert_eq!(list.hosts.len(), 14, "{:?}", list.hosts);
    assert!(
        list.hosts
            .iter()
            .all(|h| !h.contains("05.") && !h.contains("07."))
    );
    let d = load_valid("slurm.xml");
    let slurm = d
        .processes
        .iter()
        .find_map(|p| match &p.kind {
            ProcessKind::Slurm(s) => Some(s),
            _ => None,
        })
        .expect("a slurmProcess");
    assert!(slurm.walltime.is_some() && slurm.partition.is_some());
    // ssh → slurm → jvm: the ssh link leads to the slurm process.
    let ssh_next = d.processes.iter().find_map(|p| match &p.kind {
        ProcessKind::Ssh(s) => Some(s.link.next.value.clone()),
        _ => None,
    });
    assert!(matches!(
        d.process(&ssh_next.expect("an ssh link")).map(|p| &p.kind),
        Some(ProcessKind::Slurm(_))
    ));
}

#[test]
fn variables_follow_the_contract() {
    let d = load_valid("variables.xml");
    assert_eq!(d.variable("user.home"), Some("/home/tester"));
    assert_eq!(d.variable("run.id"), Some("42"));
    assert_eq!(d.variable("slurm.walltime"), Some("1-06:00:00"));
    // Without the program variable the descriptor is rejected at the declaration.
    let loaded = load(data("variables.xml"), &LoadOptions::default());
    let codes: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.code)
        .collect();
    assert!(codes.contains(&"empty-variable"), "{codes:?}");
}

#[test]
fn program_variables_override_descriptor_defaults() {
    let shipped = Path::new("../examples/descriptors/local.xml");
    let nodes = |options: &LoadOptions| {
        let loaded = load(shipped, options);
        assert!(
            loaded.is_valid(),
            "{}",
            loaded.diagnostics.render(&loaded.sources)
        );
        loaded
            .descriptor
            .jvms
            .iter()
            .map(|j| j.asked_nodes)
            .sum::<u32>()
    };
    let default = nodes(&LoadOptions::default());
    assert_eq!(nodes(&LoadOptions::default().var("workers", "8")), 8);
    assert_ne!(default, 8);
}

#[test]
fn co_allocation_and_current_process() {
    let d = load_valid("local.xml");
    assert!(d.mappings.iter().any(|m| m.current_jvm.is_some()));
    assert!(
        d.virtual_nodes
            .iter()
            .any(|vn| vn.property == VnProperty::Multiple)
    );
    // Two virtual nodes share one runtime.
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &d.mappings {
        for j in &m.jvms {
            *uses.entry(j.as_str()).or_default() += 1;
        }
    }
    assert!(uses.values().any(|&n| n >= 2), "{uses:?}");
}

/// A descriptor that asks for CIC fault tolerance deploys, and so does
/// the same one asking for PML; one that protects a virtual node with
/// each is refused, where the second protocol is asked for, with the
/// reason.
#[test]
fn cic_or_pml_deploys_and_a_mix_is_refused_at_its_line() {
    let mut deploying = options();
    deploying.validate.known_service_classes = Some(Vec::new());
    let text = std::fs::read_to_string(data("proactive32.xml")).unwrap();
    let dir = std::env::temp_dir().join(format!("actogrid-ft-mix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ft_said = |read: &Loaded| {
        read.diagnostics
            .iter()
            .filter(|d| d.code.starts_with("fault-tolerance"))
            .count()
    };
    for protocol in ["cic", "pml"] {
        let path = write(
            &format!("{protocol}.xml"),
            &text.replace(
                r#"<protocol type="cic"/>"#,
                &format!(r#"<protocol type="{protocol}"/>"#),
            ),
        );
        let read = load(&path, &deploying);
        assert_eq!(
            ft_said(&read),
            0,
            "{protocol}: {}",
            read.diagnostics.render(&read.sources)
        );
    }
    // `Master` protected by PML through a technical service, `Workers`
    // by CIC.
    let mixed = text
        .replace(
            r#"<virtualNode name="Master" property="unique_singleAO"/>"#,
            r#"<virtualNode name="Master" property="unique_singleAO" technicalServiceId="ftPml"/>"#,
        )
        .replace(
            "  </technicalServices>",
            r#"    <technicalServiceDefinition id="ftPml" class="actogrid.FaultTolerance">
      <arg name="protocol" value="pml"/>
    </technicalServiceDefinition>
  </technicalServices>"#,
        );
    let path = write("mixed.xml", &mixed);
    let read = load(&path, &deploying);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!read.is_valid());
    let rendered = read.diagnostics.render_short(&read.sources);
    assert_eq!(ft_said(&read), 1, "{rendered}");
    let line = mixed
        .lines()
        .position(|l| l.contains(r#"ftServiceId="ftCic""#))
        .unwrap()
        + 1;
    assert!(
        rendered.contains(&format!("mixed.xml:{line}:"))
            && rendered.contains(
                "error[fault-tolerance-mixed]: virtual node `Workers` asks for fault tolerance by cic, while `Master` asks for pml"
            ),
        "{rendered}"
    );
}

/// rsh and rlogin processes, and rsh process lists, are started over ssh
/// with the same host and user, and the file says so once.
#[test]
fn rsh_and_rlogin_processes_run_over_ssh_said_once_per_file() {
    let loaded = load(data("rsh_over_ssh.xml"), &options());
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    let said: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == "rsh-over-ssh")
        .collect();
    assert_eq!(
        said.len(),
        1,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert!(
        said[0]
            .message
            .starts_with("4 rsh/rlogin processes run over ssh"),
        "{}",
        said[0].message
    );
    let ssh: Vec<&SshProcess> = loaded
        .descriptor
        .processes
        .iter()
        .filter_map(|p| match &p.kind {
            ProcessKind::Ssh(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(ssh.len(), 2);
    assert!(ssh.iter().any(
        |s| s.hostname == "lab12.example.org" && s.login.username.as_deref() == Some("student")
    ));
    assert!(ssh.iter().any(|s| s.hostname == "lab13.example.org"));
}
