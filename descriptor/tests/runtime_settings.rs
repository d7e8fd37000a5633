//! `<runtimeSettings>`: read into the model with positions, values
//! expanded, a setting given twice refused, and listed by the plan. Whether
//! a name is a setting and a value fits it is for the deploying program to
//! say (it knows the runtime).

use actogrid_descriptor::{LoadOptions, load_str, plan};

const DESCRIPTOR: &str = r#"<ProActiveDescriptor>
  <variables>
    <descriptorVariable name="hb" value="30s"/>
  </variables>
  <runtimeSettings>
    <setting name="heartbeatTimeout" value="${hb}"/>
    <setting name="max_message_size" value="128MiB"/>
  </runtimeSettings>
  <componentDefinition><virtualNodesDefinition><virtualNode name="vn"/></virtualNodesDefinition></componentDefinition>
  <deployment><mapping><map virtualNode="vn"><jvmSet><currentJVM/></jvmSet></map></mapping></deployment>
</ProActiveDescriptor>
"#;

#[test]
fn settings_are_read_with_their_positions_and_expanded_values() {
    let loaded = load_str("settings.xml", DESCRIPTOR, &LoadOptions::default());
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    let settings = &loaded.descriptor.runtime_settings;
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("heartbeatTimeout", "30s"), ("max_message_size", "128MiB")]
    );
    assert_eq!(
        (settings[0].name.span.line, settings[0].value.span.line),
        (6, 6)
    );
    let text = plan::render_text(&loaded.descriptor);
    assert!(
        text.contains("heartbeatTimeout = 30s") && text.contains("max_message_size = 128MiB"),
        "{text}"
    );
}

#[test]
fn a_setting_given_twice_in_any_spelling_is_an_error_at_the_second() {
    let text = DESCRIPTOR.replace(
        r#"<setting name="max_message_size" value="128MiB"/>"#,
        r#"<setting name="heartbeat-timeout" value="10s"/>"#,
    );
    let loaded = load_str("settings.xml", &text, &LoadOptions::default());
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    let [error] = errors[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(error.code, "duplicate-id");
    assert_eq!(error.span.map(|s| s.line), Some(7));
    assert!(
        error
            .message
            .contains("first as `heartbeatTimeout` at line 6"),
        "{}",
        error.message
    );
}

#[test]
fn a_setting_needs_a_name_and_a_value() {
    let text = DESCRIPTOR.replace(r#" value="128MiB""#, "");
    let loaded = load_str("settings.xml", &text, &LoadOptions::default());
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.code == "missing-attribute" && d.span.map(|s| s.line) == Some(7)),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
}
