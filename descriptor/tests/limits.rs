//! Hostile descriptors: a few lines that would expand into gigabytes, a
//! nesting deeper than any stack, sequences whose plan would be
//! exponential. Each is refused (or shown) quickly, in little memory, with a
//! diagnostic at its place; none crashes the reader.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use actogrid_descriptor::{
    LoadOptions, Loaded, MAX_DEPTH, MAX_EXPANDED_TOTAL, MAX_EXPANDED_VALUE, load, load_str, plan,
};

/// A descriptor around `variables` and `body` (a virtual node named `vn`).
fn descriptor(variables: &str, vn_attributes: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <variables>
{variables}  </variables>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="vn" {vn_attributes}/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="vn"><jvmSet><currentJVM/></jvmSet></map></mapping>
  </deployment>
</ProActiveDescriptor>
"#
    )
}

/// This process's peak resident memory, in bytes (Linux).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn errors(loaded: &Loaded) -> Vec<&actogrid_descriptor::Diagnostic> {
    loaded.diagnostics.iter().filter(|d| d.is_error()).collect()
}

#[test]
fn a_variable_bomb_is_refused_at_the_variable_that_grows_too_large() {
    // Each variable is ten copies of the previous one: `lol9` would be
    // 10^9 copies of "lol!", 4 GB, from a file of under 2 KB.
    let mut variables = String::from("    <descriptorVariable name=\"lol0\" value=\"lol!\"/>\n");
    for i in 1..10 {
        let copies = format!("${{lol{}}}", i - 1).repeat(10);
        let _ = writeln!(
            variables,
            "    <descriptorVariable name=\"lol{i}\" value=\"{copies}\"/>"
        );
    }
    let text = descriptor(&variables, "timeout=\"${lol9}\"");
    assert!(text.len() < 2_000, "the bomb is {} bytes", text.len());

    let started = Instant::now();
    let loaded = load_str("bomb.xml", &text, &LoadOptions::default());
    let took = started.elapsed();

    let [error] = errors(&loaded)[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(error.code, "expansion-too-large");
    // 4 bytes × 10^6 = 4 MB: `lol6` is the first value over 1 MiB, and the
    // diagnostic points into its definition, at one of its references.
    let span = error.span.expect("a position");
    assert_eq!(
        span.line,
        10,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert!(error.message.contains("`${lol5}`"), "{}", error.message);
    assert!(error.message.contains("1 MiB"), "{}", error.message);
    assert!(error.hint.is_some());
    // Nothing built on top of the broken variable is reported again.
    assert!(
        took < Duration::from_secs(20),
        "expanding the bomb took {took:?}"
    );
    if let Some(peak) = peak_memory() {
        assert!(peak < 512 << 20, "peak memory {} MiB", peak >> 20);
    }
}

#[test]
fn values_within_the_limit_still_expand() {
    let big = "x".repeat(MAX_EXPANDED_VALUE / 4);
    let variables = format!(
        "    <descriptorVariable name=\"a\" value=\"{big}\"/>\n    <descriptorVariable name=\"b\" value=\"${{a}}${{a}}${{a}}\"/>\n"
    );
    let loaded = load_str(
        "fits.xml",
        &descriptor(&variables, ""),
        &LoadOptions::default(),
    );
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert_eq!(
        loaded.descriptor.variable("b").map(str::len),
        Some(3 * big.len())
    );
}

#[test]
fn many_large_values_stop_at_the_total_limit_once() {
    // Each value fits, but together they pass the limit of a descriptor.
    let chunk = "y".repeat(MAX_EXPANDED_VALUE / 2);
    let count = 2 * MAX_EXPANDED_TOTAL / chunk.len() + 8;
    let mut variables = format!("    <descriptorVariable name=\"c\" value=\"{chunk}\"/>\n");
    for i in 0..count {
        let _ = writeln!(
            variables,
            "    <descriptorVariable name=\"copy{i}\" value=\"${{c}}\"/>"
        );
    }
    let loaded = load_str(
        "total.xml",
        &descriptor(&variables, ""),
        &LoadOptions::default(),
    );
    let errors = errors(&loaded);
    assert_eq!(
        errors.len(),
        1,
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert_eq!(errors[0].code, "expansion-too-large");
    assert!(
        errors[0].message.contains("16 MiB"),
        "{}",
        errors[0].message
    );
}

/// `depth` nested `<a>` elements inside the root.
fn deep_document(depth: usize) -> String {
    let mut text = String::with_capacity(depth * 8 + 64);
    text.push_str("<ProActiveDescriptor>\n");
    for _ in 0..depth {
        text.push_str("<a>");
    }
    for _ in 0..depth {
        text.push_str("</a>");
    }
    text.push_str("\n</ProActiveDescriptor>\n");
    text
}

#[test]
fn a_document_nested_two_hundred_thousand_deep_is_an_error_not_a_stack_overflow() {
    // Runs on the test's own thread, with its default stack.
    let text = deep_document(200_000);
    let loaded = load_str("deep.xml", &text, &LoadOptions::default());
    let [error] = errors(&loaded)[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(error.code, "too-deep");
    let span = error.span.expect("a position");
    // The root is line 1 column 2; the element that goes past the limit
    // is the MAX_DEPTH-th <a> of line 2.
    assert_eq!((span.line, span.col), (2, 3 * (MAX_DEPTH - 1) as u32 + 2));
    assert!(error.message.contains("100"), "{}", error.message);
    let rendered = loaded.diagnostics.render(&loaded.sources);
    assert!(rendered.contains("deep.xml:2:"), "{rendered}");

    // The same through a file on disk.
    let dir = std::env::temp_dir().join(format!("actogrid-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("deep.xml");
    std::fs::write(&path, &text).expect("the deep file");
    let loaded = load(&path, &LoadOptions::default());
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
    assert_eq!(errors(&loaded).len(), 1);
    assert!(!loaded.is_valid());
}

#[test]
fn nesting_up_to_the_limit_is_read_and_reported_as_unknown_elements() {
    // Unknown elements are walked (their ids are collected): a nesting just
    // under the limit goes through every walk without trouble.
    let text = deep_document(MAX_DEPTH - 1);
    let loaded = load_str("deep.xml", &text, &LoadOptions::default());
    assert!(
        loaded.diagnostics.iter().all(|d| d.code != "too-deep"),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.code == "unknown-element")
    );
}

#[test]
fn sequences_sharing_members_give_a_plan_in_linear_time_and_size() {
    // s0 starts s1 twice, s1 starts s2 twice, …: 2^30 runtimes, and a plan
    // that would name every path is exponential.
    let levels = 30;
    let mut processes = String::new();
    for i in 0..levels {
        let _ = writeln!(
            processes,
            r#"      <processDefinition id="s{i}"><independentProcessSequence>
        <processReference refid="s{n}"/><processReference refid="s{n}b"/>
      </independentProcessSequence></processDefinition>
      <processDefinition id="s{n}b"><independentProcessSequence>
        <processReference refid="s{n}"/>
      </independentProcessSequence></processDefinition>"#,
            n = i + 1
        );
    }
    let _ = writeln!(
        processes,
        r#"      <processDefinition id="s{levels}"><jvmProcess/></processDefinition>"#
    );
    let text = format!(
        r#"<ProActiveDescriptor>
  <componentDefinition><virtualNodesDefinition><virtualNode name="vn"/></virtualNodesDefinition></componentDefinition>
  <deployment>
    <mapping><map virtualNode="vn"><jvmSet><vmName value="r"/></jvmSet></map></mapping>
    <jvms><jvm name="r"><creation><processReference refid="s0"/></creation></jvm></jvms>
  </deployment>
  <infrastructure><processes>
{processes}  </processes></infrastructure>
</ProActiveDescriptor>
"#
    );
    let started = Instant::now();
    let loaded = load_str(Path::new("fan.xml"), &text, &LoadOptions::default());
    assert!(
        loaded.is_valid(),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
    let text_plan = plan::render_text(&loaded.descriptor);
    let dot = plan::render_dot(&loaded.descriptor);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(text_plan.len() < 100_000, "{} bytes", text_plan.len());
    assert!(text_plan.contains("(as above)"), "{text_plan}");
    assert!(dot.len() < 100_000, "{} bytes", dot.len());
    assert!(
        text_plan.contains(&format!("{} runtime(s)", 1u64 << levels)),
        "{text_plan}"
    );
}

#[test]
fn a_chain_of_a_hundred_thousand_processes_is_refused_without_overflow_or_delay() {
    // Each ssh process starts the next: validation follows the chain
    // (cycles), and the plan walks it.
    let n = 100_000;
    let mut processes = String::with_capacity(n * 150);
    for i in 0..n {
        let _ = writeln!(
            processes,
            r#"<processDefinition id="p{i}"><sshProcess hostname="h{i}"><processReference refid="p{}"/></sshProcess></processDefinition>"#,
            i + 1
        );
    }
    let _ = writeln!(
        processes,
        r#"<processDefinition id="p{n}"><jvmProcess/></processDefinition>"#
    );
    let text = format!(
        r#"<ProActiveDescriptor>
<componentDefinition><virtualNodesDefinition><virtualNode name="vn"/></virtualNodesDefinition></componentDefinition>
<deployment>
<mapping><map virtualNode="vn"><jvmSet><vmName value="r"/></jvmSet></map></mapping>
<jvms><jvm name="r"><creation><processReference refid="p0"/></creation></jvm></jvms>
</deployment>
<infrastructure><processes>
{processes}</processes></infrastructure>
</ProActiveDescriptor>
"#
    );
    let started = Instant::now();
    let loaded = load_str("chain.xml", &text, &LoadOptions::default());
    // Refused: no deployment starts a chain that long, once, at its start.
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    let [error] = errors[..] else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    assert_eq!(error.code, "chain-too-long");
    assert_eq!(error.span.map(|s| s.line), Some(8));
    assert!(
        error.message.contains("`p0` is 100001 processes long"),
        "{}",
        error.message
    );
    // The model can still be shown.
    let text_plan = plan::render_text(&loaded.descriptor);
    let dot = plan::render_dot(&loaded.descriptor);
    // Minutes, not hours: a generous bound for a debug build on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "{:?}",
        started.elapsed()
    );
    assert!(text_plan.contains("runtime set `r`"), "{text_plan}");
    assert!(dot.contains("p99999"));

    // The same chain closed into a loop is one cycle, reported once.
    let looped = text.replace(
        &format!(r#"<processDefinition id="p{n}"><jvmProcess/></processDefinition>"#),
        &format!(
            r#"<processDefinition id="p{n}"><sshProcess hostname="last"><processReference refid="p0"/></sshProcess></processDefinition>"#
        ),
    );
    let loaded = load_str("loop.xml", &looped, &LoadOptions::default());
    let cycles: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == "process-cycle")
        .collect();
    assert_eq!(cycles.len(), 1);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.code != "chain-too-long"),
        "a loop is one mistake"
    );
    assert!(
        cycles[0].message.contains("more) →") && cycles[0].message.len() < 200,
        "{}",
        cycles[0].message
    );
}
