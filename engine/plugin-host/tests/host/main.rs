//! Integration tests of the plugin host against the real plugins built by `plugins/build.sh`.

mod alerts;
mod cli;
mod contract;
mod hostile;
mod loading;
mod run;
mod slack;
mod support;
mod worlds;
