//! The derive's build errors, each pointing at the attribute (or field)
//! that is wrong, all of a struct's at once.

#[test]
fn mistakes_are_build_errors_at_their_attribute() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
