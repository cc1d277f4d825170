//! Empty on purpose: this crate only pins `wasi-preview1-component-adapter-provider` (see
//! `Cargo.toml`) for `plugins/build.sh`, which reads the adapter file from the unpacked crate.
