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
