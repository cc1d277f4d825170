//! End-to-end tests of nightcrier: one binary, a module per area.
