//! Misuses of `#[active]` are rejected with a message on the offending
//! token, and nothing else: the expected output of each case is in
//! `tests/ui/*.stderr`.

#[test]
fn macro_ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
