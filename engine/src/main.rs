//! The `nightcrier` binary: parses the command line and delegates to the library.
fn main() {}
