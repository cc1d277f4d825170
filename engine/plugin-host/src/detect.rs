//! World and WIT-version detection from a component's export names (`nightcrier:plugin/<interface>@<version>`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// The WIT package every plugin exports from.
pub const WIT_PACKAGE: &str = "nightcrier:plugin";
/// The WIT version this engine is built against.
pub const WIT_VERSION: &str = "0.1.0";
/// Versions this engine accepts (see `wit/README.md`).
pub const SUPPORTED_WIT_VERSIONS: &str = "0.1.x";

/// The three plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Event-source adapter (`event-source` interface).
    Source,
    /// Pre-triage processor.
    PreTriage,
    /// Post-triage processor.
    PostTriage,
}

impl World {
    /// The world's name in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Source => "source",
            World::PreTriage => "pre-triage",
            World::PostTriage => "post-triage",
        }
    }

    fn from_interface(interface: &str) -> Option<World> {
        match interface {
            "event-source" => Some(World::Source),
            "pre-triage-processor" => Some(World::PreTriage),
            "post-triage-processor" => Some(World::PostTriage),
            _ => None,
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Splits `nightcrier:plugin/<interface>@<version>`.
fn parse_export(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    rest.split_once('@')
}

/// Whether a WIT version is accepted: while the major is 0 the minor acts as the major, so `0.1.*`.
pub fn version_supported(version: &str) -> bool {
    let mut parts = version.split('.');
    matches!((parts.next(), parts.next()), (Some("0"), Some("1")))
}

/// The world and WIT version found in a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detected {
    pub(crate) world: World,
    pub(crate) wit_version: String,
}

pub(crate) fn detect(
    path: &Path,
    engine: &Engine,
    component: &Component,
) -> Result<Detected, LoadError> {
    let names: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    detect_from_names(path, &names)
}

pub(crate) fn detect_from_names(path: &Path, names: &[String]) -> Result<Detected, LoadError> {
    let mut found: Vec<(World, &str)> = Vec::new();
    for name in names {
        let Some((interface, version)) = parse_export(name) else {
            continue;
        };
        if !version_supported(version) {
            return Err(LoadError::UnsupportedVersion {
                path: path.to_owned(),
                found: version.to_owned(),
                supported: SUPPORTED_WIT_VERSIONS,
            });
        }
        if let Some(world) = World::from_interface(interface) {
            found.push((world, version));
        }
    }
    match found.as_slice() {
        [(world, version)] => Ok(Detected {
            world: *world,
            wit_version: (*version).to_owned(),
        }),
        [] => Err(LoadError::NoWorld {
            path: path.to_owned(),
            reason: format!(
                "it exports none of {WIT_PACKAGE}/event-source, pre-triage-processor or post-triage-processor (exports: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        }),
        many => Err(LoadError::NoWorld {
            path: path.to_owned(),
            reason: format!(
                "it exports more than one world ({})",
                many.iter()
                    .map(|(world, _)| world.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn detects_each_world() {
        let path = Path::new("p.wasm");
        let detected =
            detect_from_names(path, &names(&["nightcrier:plugin/event-source@0.1.0"])).unwrap();
        assert_eq!(
            detected,
            Detected {
                world: World::Source,
                wit_version: "0.1.0".into()
            }
        );
        let detected = detect_from_names(
            path,
            &names(&["nightcrier:plugin/post-triage-processor@0.1.3"]),
        )
        .unwrap();
        assert_eq!(detected.world, World::PostTriage);
    }

    #[test]
    fn refuses_other_majors_naming_the_file() {
        let error = detect_from_names(
            Path::new("old.wasm"),
            &names(&["nightcrier:plugin/pre-triage-processor@1.0.0"]),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("old.wasm") && message.contains("1.0.0") && message.contains("0.1.x"),
            "{message}"
        );
        assert!(
            detect_from_names(
                Path::new("p.wasm"),
                &names(&["nightcrier:plugin/event-source@0.2.0"])
            )
            .is_err()
        );
    }

    #[test]
    fn refuses_components_without_a_world() {
        let error =
            detect_from_names(Path::new("x.wasm"), &names(&["wasi:cli/run@0.2.0"])).unwrap_err();
        assert!(
            error.to_string().contains("x.wasm fits no plugin world"),
            "{error}"
        );
        assert!(error.to_string().contains("wasi:cli/run@0.2.0"), "{error}");
        let error = detect_from_names(
            Path::new("x.wasm"),
            &names(&[
                "nightcrier:plugin/event-source@0.1.0",
                "nightcrier:plugin/pre-triage-processor@0.1.0",
            ]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("more than one world"), "{error}");
    }
}
