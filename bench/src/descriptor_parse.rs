//! `descriptor-parse`: reading a descriptor of a large ssh cluster.
//!
//! The descriptor is generated in memory: a `processListbyHost` naming
//! `--per-list` hosts one by one and a `processList` covering `[1-N]`, both
//! chained to a `jvmProcess` and mapped on virtual nodes, with `${…}`
//! variables in the attributes so expansion is part of the cost. The value
//! is [`actogrid_descriptor::load_str`] (parse, expand, read, validate); the
//! baseline is a plain quick-xml event scan of the same text, the raw cost
//! of reading the XML.

use std::fmt::Write as _;
use std::hint::black_box;

use actogrid_descriptor::model::ProcessKind;
use actogrid_descriptor::{LoadOptions, load_str};
use anyhow::{Context as _, bail, ensure};
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::report::Report;
use crate::timing::{Summary, paired};

/// The goal for the median, in milliseconds.
const TARGET_MS: f64 = 100.0;

/// Options of `descriptor-parse`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Hosts in each of the two host lists (the descriptor names twice as many).
    #[arg(long, default_value_t = 5000)]
    per_list: usize,
    /// Untimed rounds before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Timed rounds.
    #[arg(long, default_value_t = 100)]
    runs: usize,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(
        (1..=9999).contains(&args.per_list),
        "--per-list must be from 1 to 9999 (host numbers are padded to 4 digits)"
    );
    let text = descriptor(args.per_list);
    let options = LoadOptions::default();
    let expected_hosts = 2 * args.per_list;

    // Check once that the text is what the benchmark claims to read.
    let loaded = load_str("bench-cluster.xml", &text, &options);
    if !loaded.is_valid() {
        bail!(
            "the generated descriptor is invalid:\n{}",
            loaded.diagnostics.render(&loaded.sources)
        );
    }
    let hosts = host_names(&loaded.descriptor);
    ensure!(
        hosts.len() == expected_hosts,
        "the descriptor names {} hosts, expected {expected_hosts}",
        hosts.len()
    );
    let first = hosts.first().context("no host")?;
    ensure!(
        hosts.iter().all(|h| h.ends_with(".grid.example.org")),
        "a host name was not expanded with its domain"
    );
    let elements = scan(&text).elements;

    let (subject, baseline) = paired(
        args.warmup,
        args.runs,
        || {
            black_box(load_str(
                black_box("bench-cluster.xml"),
                black_box(&text),
                &options,
            ));
        },
        || {
            black_box(scan(black_box(&text)));
        },
    );
    let subject = Summary::of(&subject);
    let baseline = Summary::of(&baseline);
    let met = if subject.median < TARGET_MS {
        "met"
    } else {
        "NOT met"
    };
    Ok(Report::new(
        "descriptor-parse",
        "ms",
        subject.median,
        subject.p90,
        "quick-xml event scan",
        baseline.median,
    )
    .note(format!(
        "descriptor: {} KiB, {} lines, {elements} elements, {} hosts (first: {first})",
        text.len() / 1024,
        text.lines().count(),
        hosts.len(),
    ))
    .note(format!(
        "{} timed runs after {} warm-up, load_str and the scan alternated; baseline p90 {:.3} ms",
        args.runs, args.warmup, baseline.p90
    ))
    .note(format!("target: median under {TARGET_MS} ms: {met}"))
    .with("hosts", expected_hosts)
    .with("target_ms", TARGET_MS as u64))
}

/// What a plain scan saw; returned so that nothing is optimised away.
#[derive(Debug, Default)]
struct Scan {
    elements: usize,
    attributes: usize,
    bytes: usize,
}

/// Reads every event to the end, and every attribute of every element.
fn scan(text: &str) -> Scan {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut seen = Scan::default();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                seen.elements += 1;
                for attr in e.attributes().flatten() {
                    seen.attributes += 1;
                    seen.bytes += attr.key.as_ref().len() + attr.value.len();
                }
            }
            Ok(Event::Text(t)) => seen.bytes += t.len(),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the generated descriptor is not well-formed: {e}"),
        }
    }
    seen
}

/// A descriptor for a cluster of `2 × per_list` hosts reached over ssh.
fn descriptor(per_list: usize) -> String {
    let mut hostlist = String::new();
    for i in 0..per_list {
        if i % 8 == 0 {
            hostlist.push_str("\n                           ");
        } else {
            hostlist.push(' ');
        }
        let _ = write!(hostlist, "r{:02}-c{:04}", i / 200 + 1, i % 200 + 1);
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by actogrid-bench descriptor-parse: {hosts} hosts reached over ssh. -->
<ProActiveDescriptor xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
                     xsi:noNamespaceSchemaLocation="DescriptorSchema.xsd">
  <variables>
    <descriptorVariable name="user" value="grid"/>
    <descriptorVariable name="domain" value="grid.example.org"/>
    <descriptorDefaultVariable name="install" value="/opt/actogrid"/>
    <programDefaultVariable name="log.level" value="info"/>
  </variables>

  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Listed" property="multiple" timeout="5m" minNodeNumber="1">
        <information>Hosts named one by one, logged in as ${{user}}.</information>
      </virtualNode>
      <virtualNode name="Ranged" property="multiple" timeout="5m"/>
      <virtualNode name="All" property="multiple_cyclic" timeout="10m"/>
    </virtualNodesDefinition>
  </componentDefinition>

  <deployment>
    <mapping>
      <map virtualNode="Listed">
        <jvmSet>
          <vmName value="listedNodes"/>
        </jvmSet>
      </map>
      <map virtualNode="Ranged">
        <jvmSet>
          <vmName value="rangedNodes"/>
        </jvmSet>
      </map>
      <map virtualNode="All">
        <jvmSet>
          <vmName value="listedNodes"/>
          <vmName value="rangedNodes"/>
        </jvmSet>
      </map>
    </mapping>
    <jvms>
      <jvm name="listedNodes" askedNodes="2">
        <creation>
          <processReference refid="listedHosts"/>
        </creation>
      </jvm>
      <jvm name="rangedNodes" askedNodes="2">
        <creation>
          <processReference refid="rangedHosts"/>
        </creation>
      </jvm>
    </jvms>
  </deployment>

  <infrastructure>
    <processes>
      <processDefinition id="runtime">
        <jvmProcess>
          <commandPath value="${{install}}/bin/actogrid-node"/>
          <environment>
            <variable name="RUST_LOG" value="${{log.level}}"/>
            <variable name="ACTOGRID_HOME" value="/home/${{user}}/actogrid"/>
          </environment>
        </jvmProcess>
      </processDefinition>

      <processDefinition id="listedHosts">
        <processListbyHost domain="${{domain}}" username="${{user}}" port="22"
                           identityFile="/home/${{user}}/.ssh/id_ed25519"
                           hostlist="{hostlist}">
          <environment>
            <variable name="NODE_ROLE" value="listed"/>
          </environment>
          <processReference refid="runtime"/>
          <commandPath value="/usr/bin/ssh"/>
        </processListbyHost>
      </processDefinition>

      <processDefinition id="rangedHosts">
        <processList fixedName="node" list="[1-{per_list}]" padding="4"
                     domain="${{domain}}" username="${{user}}"
                     identityFile="/home/${{user}}/.ssh/id_ed25519">
          <environment>
            <variable name="NODE_ROLE" value="ranged"/>
          </environment>
          <processReference refid="runtime"/>
          <commandPath value="/usr/bin/ssh"/>
        </processList>
      </processDefinition>
    </processes>
  </infrastructure>
</ProActiveDescriptor>
"#,
        hosts = 2 * per_list,
    )
}

/// Every host the host-list processes of `d` name.
fn host_names(d: &actogrid_descriptor::Descriptor) -> Vec<&str> {
    d.processes
        .iter()
        .flat_map(|p| match &p.kind {
            ProcessKind::ProcessList(l) | ProcessKind::ProcessListByHost(l) => l.hosts.as_slice(),
            _ => &[],
        })
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_descriptor_is_valid_and_names_every_host() {
        let text = descriptor(20);
        let loaded = load_str("t.xml", &text, &LoadOptions::default());
        assert!(
            loaded.is_valid(),
            "{}",
            loaded.diagnostics.render(&loaded.sources)
        );
        let hosts = host_names(&loaded.descriptor);
        assert_eq!(hosts.len(), 40);
        assert!(hosts.contains(&"r01-c0001.grid.example.org"));
        assert!(hosts.contains(&"node0020.grid.example.org"));
        assert!(scan(&text).elements > 30);
    }
}
