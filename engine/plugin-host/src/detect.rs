//! World and WIT-version detection from a component's export names (`nightcrier:plugin/<interface>@<version>`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// The WIT package every plugin exports from.
pub const WIT_PACKAGE: &str = "nightcrier:plugin";
/// The WIT version this engine is built against.
pub const WIT_VERSION: &str = "0.1.2";
/// Versions this engine accepts (see `wit/README.md`).
pub const SUPPORTED_WIT_VERSIONS: &str = "0.1.x";
/// Released contract versions frozen under `wit/deps/` and kept loading (tested with fixtures
/// built against each), oldest first; [`WIT_VERSION`] is the one being worked on.
pub const FROZEN_WIT_VERSIONS: &[&str] = &["0.1.0", "0.1.1"];

/// WASI preview 2 interfaces the host links (`wasmtime-wasi` p2 and the outgoing half of
/// `wasi:http`), without their version: every `0.2.x` is accepted.
const OFFERED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// The contract interfaces the host offers to plugins (imports), without their version.
const OFFERED_CONTRACT: &[&str] = &["host", "types"];

/// Whether the host links an import of this name (an interface at a version it accepts). An
/// offered name can still fail to link when its functions differ; the linker's error says so.
pub(crate) fn import_offered(name: &str) -> bool {
    if let Some((interface, version)) = parse_export(name) {
        return OFFERED_CONTRACT.contains(&interface) && version_supported(version);
    }
    match name.split_once('@') {
        Some((interface, version)) => {
            OFFERED_WASI.contains(&interface) && version.starts_with("0.2.")
        }
        None => false,
    }
}

/// The interface a post-triage plugin may also export to receive operational alerts (since 0.1.2).
pub const ALERT_INTERFACE: &str = "alert-handler";

/// Whether the host calls an export of this name: one of the three plugin interfaces, or the
/// alert handler, at a version it accepts.
pub(crate) fn export_called(name: &str) -> bool {
    parse_export(name).is_some_and(|(interface, version)| {
        (World::from_interface(interface).is_some() || interface == ALERT_INTERFACE)
            && version_supported(version)
    })
}

/// What the host accepts, in words, for `plugins check`.
pub fn accepted_contract() -> String {
    format!(
        "this host accepts components built against {WIT_PACKAGE}@{SUPPORTED_WIT_VERSIONS} \
         (released and frozen: {}; current: {WIT_VERSION}) that export one of \
         {WIT_PACKAGE}/event-source, {WIT_PACKAGE}/pre-triage-processor or \
         {WIT_PACKAGE}/post-triage-processor (a post-triage plugin may also export \
         {WIT_PACKAGE}/{ALERT_INTERFACE}, since 0.1.2, to receive operational alerts), and \
         import only {WIT_PACKAGE}/host and WASI 0.2.x",
        FROZEN_WIT_VERSIONS.join(", ")
    )
}

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
    /// A post-triage plugin that also exports `alert-handler`.
    pub(crate) handles_alerts: bool,
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
    let mut handles_alerts = false;
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
        handles_alerts |= interface == ALERT_INTERFACE;
    }
    match found.as_slice() {
        [(world, _)] if handles_alerts && *world != World::PostTriage => Err(LoadError::NoWorld {
            path: path.to_owned(),
            reason: format!(
                "it exports {WIT_PACKAGE}/{ALERT_INTERFACE}, which only a post-triage plugin may export, from a {world} plugin"
            ),
        }),
        [(world, version)] => Ok(Detected {
            world: *world,
            wit_version: (*version).to_owned(),
            handles_alerts,
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
                wit_version: "0.1.0".into(),
                handles_alerts: false,
            }
        );
        let detected = detect_from_names(
            path,
            &names(&["nightcrier:plugin/post-triage-processor@0.1.3"]),
        )
        .unwrap();
        assert_eq!(detected.world, World::PostTriage);
        assert!(!detected.handles_alerts);
    }

    #[test]
    fn detects_an_alert_handler_on_post_triage_only() {
        let detected = detect_from_names(
            Path::new("slack.wasm"),
            &names(&[
                "nightcrier:plugin/post-triage-processor@0.1.2",
                "nightcrier:plugin/alert-handler@0.1.2",
            ]),
        )
        .unwrap();
        assert_eq!(
            detected,
            Detected {
                world: World::PostTriage,
                wit_version: "0.1.2".into(),
                handles_alerts: true,
            }
        );
        let error = detect_from_names(
            Path::new("odd.wasm"),
            &names(&[
                "nightcrier:plugin/event-source@0.1.2",
                "nightcrier:plugin/alert-handler@0.1.2",
            ]),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("only a post-triage plugin"),
            "{error}"
        );
        assert!(export_called("nightcrier:plugin/alert-handler@0.1.2"));
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
    fn knows_what_it_offers_and_calls() {
        assert!(import_offered("nightcrier:plugin/host@0.1.0"));
        assert!(import_offered("nightcrier:plugin/host@0.1.7"));
        assert!(!import_offered("nightcrier:plugin/host@0.2.0"));
        assert!(!import_offered("nightcrier:plugin/alerts@0.1.1"));
        assert!(import_offered("wasi:io/streams@0.2.0"));
        assert!(import_offered("wasi:http/outgoing-handler@0.2.12"));
        assert!(!import_offered("wasi:http/incoming-handler@0.2.12"));
        assert!(!import_offered("wasi:io/streams@0.3.0"));
        assert!(!import_offered("acme:other/greeter@0.1.0"));
        assert!(export_called(
            "nightcrier:plugin/pre-triage-processor@0.1.0"
        ));
        assert!(!export_called(
            "nightcrier:plugin/pre-triage-processor@1.0.0"
        ));
        assert!(!export_called("wasi:cli/run@0.2.0"));
        let words = accepted_contract();
        assert!(
            words.contains("0.1.x") && words.contains("0.1.0"),
            "{words}"
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
