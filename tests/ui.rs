//! Compile-fail tests: misuse of `#[node]` and mis-typed wiring are errors
//! that point at the offending token and say what was expected.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
