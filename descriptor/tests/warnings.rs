//! Warnings stay readable on the large descriptors ProActive shipped: the
//! Java-only settings they repeat in every process are summed up in one
//! warning per file, the ignored attributes of one element in one warning,
//! and `verbose` shows each of them.

use actogrid_descriptor::{Diagnostic, LoadOptions, Loaded, Severity, load_str};

/// `processes` runtime processes, each with a classpath and JVM parameters,
/// all mapped; a P2P service with three ProActive tuning knobs.
fn descriptor(processes: usize) -> String {
    let mut jvms = String::new();
    let mut names = String::new();
    let mut definitions = String::new();
    for i in 0..processes {
        names += &format!("          <vmName value=\"jvm{i}\"/>\n");
        jvms += &format!(
            "      <jvm name=\"jvm{i}\"><creation><processReference refid=\"runtime{i}\"/></creation></jvm>\n"
        );
        definitions += &format!(
            r#"      <processDefinition id="runtime{i}">
        <jvmProcess>
          <classpath><absolutePath value="/opt/app/app.jar"/></classpath>
          <jvmParameters><parameter value="-Xmx1g"/></jvmParameters>
        </jvmProcess>
      </processDefinition>
"#
        );
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping>
      <map virtualNode="Workers">
        <jvmSet>
          <vmName value="p2p"/>
{names}        </jvmSet>
      </map>
    </mapping>
    <jvms>
      <jvm name="p2p"><acquisition><serviceReference refid="overlay"/></acquisition></jvm>
{jvms}    </jvms>
  </deployment>
  <infrastructure>
    <processes>
{definitions}    </processes>
    <services>
      <serviceDefinition id="overlay">
        <P2PService nodesAsked="2" acq="rmi" multi_proc_nodes="true" xml_path="/opt/p2p.xml">
          <peerSet><peer>peer1.example.org:7100</peer></peerSet>
        </P2PService>
      </serviceDefinition>
    </services>
  </infrastructure>
</ProActiveDescriptor>
"#
    )
}

fn load(text: &str, verbose: bool) -> Loaded {
    let options = LoadOptions {
        verbose,
        ..LoadOptions::default()
    };
    let loaded = load_str("deploy.xml", text, &options);
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    loaded
}

fn with_code<'l>(loaded: &'l Loaded, code: &str) -> Vec<&'l Diagnostic> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == code)
        .collect()
}

#[test]
fn java_only_settings_are_summed_up_once_per_file() {
    let loaded = load(&descriptor(30), false);
    let summary = with_code(&loaded, "java-only-settings");
    assert_eq!(summary.len(), 1, "{summary:?}");
    let summary = summary[0];
    assert_eq!(summary.severity, Severity::Warning);
    assert!(
        summary
            .message
            .starts_with("60 Java-only settings ignored (<classpath>, <jvmParameters>; lines "),
        "{}",
        summary.message
    );
    // The first lines are listed, then an ellipsis; the warning stands at the first.
    assert!(summary.message.ends_with(", …)"), "{}", summary.message);
    let first_line = summary.span.expect("a position").line;
    assert!(summary.message.contains(&format!("lines {first_line}, ")));
    assert!(with_code(&loaded, "ignored-element").is_empty());
    // Nothing else to say but the P2P knobs: the whole report stays short.
    assert_eq!(
        loaded.diagnostics.len(),
        2,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
}

#[test]
fn ignored_attributes_of_one_element_are_one_warning() {
    let loaded = load(&descriptor(1), false);
    let ignored = with_code(&loaded, "ignored-attribute");
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(
        ignored[0].message,
        "`acq`, `multi_proc_nodes` and `xml_path` of <P2PService> are ignored"
    );
}

#[test]
fn verbose_shows_each_ignored_setting() {
    let loaded = load(&descriptor(30), true);
    assert!(with_code(&loaded, "java-only-settings").is_empty());
    let each = with_code(&loaded, "ignored-element");
    assert_eq!(each.len(), 60);
    assert!(each.iter().any(|d| d.message == "<classpath> is ignored"));
    let ignored = with_code(&loaded, "ignored-attribute");
    let messages: Vec<&str> = ignored.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`acq` of <P2PService> is ignored",
            "`multi_proc_nodes` of <P2PService> is ignored",
            "`xml_path` of <P2PService> is ignored"
        ]
    );
}

#[test]
fn a_single_java_only_setting_keeps_its_own_warning() {
    let text = descriptor(1).replace(
        "<jvmParameters><parameter value=\"-Xmx1g\"/></jvmParameters>",
        "",
    );
    let loaded = load(&text, false);
    let each = with_code(&loaded, "ignored-element");
    assert_eq!(each.len(), 1);
    assert_eq!(each[0].message, "<classpath> is ignored");
    assert!(with_code(&loaded, "java-only-settings").is_empty());
}
