//! Compile-fail tests: misuse of `#[node]` and mis-typed wiring are errors
//! that point at the offending token and say what was expected (every one
//! of them, with no follow-on errors); and the shapes `#[node]` accepts,
//! which must compile.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
