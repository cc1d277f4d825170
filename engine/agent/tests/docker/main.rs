//! Integration tests against the real Docker engine (no skipping: a missing engine fails).
//!
//! A tiny agent image is built locally from busybox-static (`apt-get install busybox-static`)
//! on first use; its `/agent.sh` takes a variant name as its first argument.

mod restart;
mod run;
mod support;
