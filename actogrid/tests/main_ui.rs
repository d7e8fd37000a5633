//! Misuses of `#[actogrid::main(...)]` are compile errors at the offending
//! tokens: the expected output of each case is in `tests/ui/main_*.stderr`.

use actogrid::Config;

#[test]
fn main_ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/main_*.rs");
}

/// The attribute checks names against its own list (a procedural macro
/// cannot see the runtime); the list it prints must be the runtime's.
#[test]
fn the_attribute_knows_every_runtime_setting() {
    let expected = std::fs::read_to_string("tests/ui/main_unknown_setting.stderr")
        .expect("the expected output of main_unknown_setting.rs");
    let names: Vec<&str> = Config::settings().iter().map(|s| s.name).collect();
    let listed = format!("the settings are: {}", names.join(", "));
    assert!(
        expected.contains(&listed),
        "the attribute's list of settings differs from Config::settings(): update \
         macros/src/entry.rs (SETTINGS) and this test's expected output\n\
         expected to contain: {listed}\nfound:\n{expected}"
    );
}
