//! `nightcrier plugins new`: writes a self-contained plugin project (Rust or Python) that builds as generated.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::World;

/// The WIT package, embedded so a scaffold carries its own copy (`wit/`).
const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("host.wit", include_str!("../../../wit/host.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
    (
        "deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

/// Language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginLang {
    /// Rust with wit-bindgen 0.63, built with cargo for wasm32-wasip2.
    Rust,
    /// Python with componentize-py.
    Python,
}

impl std::str::FromStr for PluginLang {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rust" => Ok(PluginLang::Rust),
            "python" => Ok(PluginLang::Python),
            other => Err(format!(
                "unknown plugin language {other} (expected rust or python)"
            )),
        }
    }
}

impl std::str::FromStr for World {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "source" => Ok(World::Source),
            "pre-triage" => Ok(World::PreTriage),
            "post-triage" => Ok(World::PostTriage),
            other => Err(format!(
                "unknown plugin kind {other} (expected source, pre-triage or post-triage)"
            )),
        }
    }
}

/// Arguments of `plugins new NAME --kind KIND --lang LANG`.
#[derive(Debug, Clone)]
pub struct NewPluginOptions {
    /// Plugin name: lower-case letters, digits and dashes.
    pub name: String,
    /// The world to implement.
    pub kind: World,
    /// The language.
    pub lang: PluginLang,
    /// Folder in which `<name>/` is created.
    pub parent_dir: PathBuf,
}

/// What `plugins new` created.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The project folder.
    pub dir: PathBuf,
    /// Command to build it, run inside `dir`.
    pub build_command: String,
    /// Where the build puts the component.
    pub output: PathBuf,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|char| char.is_ascii_lowercase() || char.is_ascii_digit() || char == '-')
        && !name.ends_with('-')
}

fn write(dir: &Path, relative: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::write(&path, contents).with_context(|| format!("failed to write {}", path.display()))
}

/// Create `<parent_dir>/<name>/` with a plugin that builds as generated and passes `plugins check`.
pub fn new_plugin(options: &NewPluginOptions) -> anyhow::Result<NewPlugin> {
    if !valid_name(&options.name) {
        bail!(
            "plugin name {} must be lower-case letters, digits and dashes, starting with a letter",
            options.name
        );
    }
    let dir = options.parent_dir.join(&options.name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    for (relative, contents) in WIT_FILES {
        write(&dir, &format!("wit/{relative}"), contents)?;
    }
    let name = &options.name;
    let world = options.kind.as_str();
    match options.lang {
        PluginLang::Rust => {
            write(&dir, "Cargo.toml", &RUST_CARGO.replace("{name}", name))?;
            write(
                &dir,
                ".cargo/config.toml",
                "[build]\ntarget = \"wasm32-wasip2\"\n",
            )?;
            let body = match options.kind {
                World::Source => RUST_SOURCE,
                World::PreTriage => RUST_PRE_TRIAGE,
                World::PostTriage => RUST_POST_TRIAGE,
            };
            write(
                &dir,
                "src/lib.rs",
                &body.replace("{name}", name).replace("{world}", world),
            )?;
            write(&dir, ".gitignore", "/target\n")?;
            let snake = name.replace('-', "_");
            Ok(NewPlugin {
                output: dir.join(format!("target/wasm32-wasip2/release/{snake}.wasm")),
                build_command: "cargo build --release".to_owned(),
                dir,
            })
        }
        PluginLang::Python => {
            let body = match options.kind {
                World::Source => PYTHON_SOURCE,
                World::PreTriage => PYTHON_PRE_TRIAGE,
                World::PostTriage => PYTHON_POST_TRIAGE,
            };
            write(&dir, "app.py", &body.replace("{name}", name))?;
            let build =
                format!("componentize-py -d wit -w {world} componentize app -o {name}.wasm");
            write(
                &dir,
                "build.sh",
                &format!(
                    "#!/usr/bin/env bash\n# Needs componentize-py 0.25.1 (pip install componentize-py==0.25.1).\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{build}\n"
                ),
            )?;
            Ok(NewPlugin {
                output: dir.join(format!("{name}.wasm")),
                build_command: build,
                dir,
            })
        }
    }
}

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = { version = "=0.63.0", default-features = false, features = ["macros", "realloc", "std"] }

[profile.release]
opt-level = 3
lto = true
strip = true
codegen-units = 1

# A standalone project, even when created inside another cargo workspace.
[workspace]
"#;

const RUST_SOURCE: &str = r#"//! {name}: a nightcrier source plugin. Build with `cargo build --release`.

wit_bindgen::generate!({ world: "{world}", path: "wit", generate_all });

use exports::nightcrier::plugin::event_source::{DecodeError, Envelope, Feed, Guest, SourceInfo, WebhookFeed};
use nightcrier::plugin::types::{Capabilities, FaultEvent, PluginInfo, ResourceRef, Severity};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> SourceInfo {
        SourceInfo {
            info: PluginInfo {
                name: "{name}".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                description: "Turns webhook bodies into fault events".to_owned(),
                capabilities: Capabilities { outbound_hosts: Vec::new(), env_vars: Vec::new(), read_only_dirs: Vec::new() },
            },
            feed: Feed::Webhook(WebhookFeed { path: "/{name}".to_owned() }),
        }
    }

    fn decode(envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        let text = String::from_utf8(envelope.body).map_err(|_| DecodeError::Malformed("body is not UTF-8".to_owned()))?;
        Ok(vec![FaultEvent {
            fault_id: String::new(),
            cluster: envelope.cluster.unwrap_or_default(),
            resource: ResourceRef { api_version: String::new(), kind: String::new(), name: String::new(), namespace: None, uid: None },
            fault_type: "Custom".to_owned(),
            severity: Severity::Warning,
            context: text,
            timestamp: String::new(),
            labels: Vec::new(),
        }])
    }
}

export!(Plugin);
"#;

const RUST_PRE_TRIAGE: &str = r#"//! {name}: a nightcrier pre-triage plugin. Build with `cargo build --release`.

wit_bindgen::generate!({ world: "{world}", path: "wit", generate_all });

use exports::nightcrier::plugin::pre_triage_processor::{Decision, Guest, Patch};
use nightcrier::plugin::host;
use nightcrier::plugin::types::{Capabilities, Incident, PluginError, PluginInfo};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{name}".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Decides whether an incident is triaged".to_owned(),
            capabilities: Capabilities { outbound_hosts: Vec::new(), env_vars: Vec::new(), read_only_dirs: Vec::new() },
        }
    }

    fn pre_triage(incident: Incident) -> Result<Decision, PluginError> {
        host::log(host::Level::Debug, "pre-triage", &[("incident".to_owned(), incident.id.clone())]);
        Ok(Decision::Proceed(Patch {
            labels: vec![("{name}".to_owned(), "seen".to_owned())],
            annotations: Vec::new(),
            priority: None,
            agent_profile: None,
            context_files: Vec::new(),
        }))
    }
}

export!(Plugin);
"#;

const RUST_POST_TRIAGE: &str = r#"//! {name}: a nightcrier post-triage plugin. Build with `cargo build --release`.

wit_bindgen::generate!({ world: "{world}", path: "wit", generate_all });

use exports::nightcrier::plugin::post_triage_processor::{Guest, Outcome};
use nightcrier::plugin::types::{AgentResult, Capabilities, Incident, PluginError, PluginInfo};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{name}".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Acts on the triage report".to_owned(),
            capabilities: Capabilities { outbound_hosts: Vec::new(), env_vars: Vec::new(), read_only_dirs: Vec::new() },
        }
    }

    fn post_triage(_incident: Incident, agent_result: AgentResult) -> Result<Outcome, PluginError> {
        Ok(Outcome {
            report_markdown: None,
            fields: vec![("report-lines".to_owned(), agent_result.report_markdown.lines().count().to_string())],
        })
    }
}

export!(Plugin);
"#;

const PYTHON_SOURCE: &str = r#""""{name}: a nightcrier source plugin in Python. Build with ./build.sh."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.event_source import DecodeError_Malformed, Feed_Webhook, SourceInfo, WebhookFeed
from wit_world.imports.types import Capabilities, FaultEvent, PluginInfo, ResourceRef, Severity


class EventSource(exports.EventSource):
    def describe(self):
        return SourceInfo(
            info=PluginInfo(
                name="{name}",
                version="0.1.0",
                description="Turns webhook bodies into fault events",
                capabilities=Capabilities(outbound_hosts=[], env_vars=[], read_only_dirs=[]),
            ),
            feed=Feed_Webhook(WebhookFeed(path="/{name}")),
        )

    def decode(self, envelope):
        try:
            text = envelope.body.decode("utf-8")
        except UnicodeDecodeError:
            raise Err(DecodeError_Malformed("body is not UTF-8"))
        return [
            FaultEvent(
                fault_id="",
                cluster=envelope.cluster or "",
                resource=ResourceRef(api_version="", kind="", name="", namespace=None, uid=None),
                fault_type="Custom",
                severity=Severity.WARNING,
                context=text,
                timestamp="",
                labels=[],
            )
        ]
"#;

const PYTHON_PRE_TRIAGE: &str = r#""""{name}: a nightcrier pre-triage plugin in Python. Build with ./build.sh."""

from wit_world import exports
from wit_world.exports.pre_triage_processor import Decision_Proceed, Patch
from wit_world.imports import host
from wit_world.imports.types import Capabilities, PluginInfo


class PreTriageProcessor(exports.PreTriageProcessor):
    def describe(self):
        return PluginInfo(
            name="{name}",
            version="0.1.0",
            description="Decides whether an incident is triaged",
            capabilities=Capabilities(outbound_hosts=[], env_vars=[], read_only_dirs=[]),
        )

    def pre_triage(self, incident):
        host.log(host.Level.DEBUG, "pre-triage", [("incident", incident.id)])
        return Decision_Proceed(
            Patch(labels=[("{name}", "seen")], annotations=[], priority=None, agent_profile=None, context_files=[])
        )
"#;

const PYTHON_POST_TRIAGE: &str = r#""""{name}: a nightcrier post-triage plugin in Python. Build with ./build.sh."""

from wit_world import exports
from wit_world.exports.post_triage_processor import Outcome
from wit_world.imports.nightcrier_plugin_types import Capabilities, PluginInfo


class PostTriageProcessor(exports.PostTriageProcessor):
    def describe(self):
        return PluginInfo(
            name="{name}",
            version="0.1.0",
            description="Acts on the triage report",
            capabilities=Capabilities(outbound_hosts=[], env_vars=[], read_only_dirs=[]),
        )

    def post_triage(self, incident, agent_result):
        lines = len(agent_result.report_markdown.splitlines())
        return Outcome(report_markdown=None, fields=[("report-lines", str(lines))])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_existing_folders() {
        let parent = tempfile::tempdir().unwrap();
        let options = |name: &str| NewPluginOptions {
            name: name.to_owned(),
            kind: World::PreTriage,
            lang: PluginLang::Rust,
            parent_dir: parent.path().to_owned(),
        };
        assert!(new_plugin(&options("Bad_Name")).is_err());
        assert!(new_plugin(&options("-x")).is_err());
        let created = new_plugin(&options("my-filter")).unwrap();
        assert!(created.dir.join("wit/deps/http/http.wit").is_file());
        assert!(
            std::fs::read_to_string(created.dir.join("src/lib.rs"))
                .unwrap()
                .contains("world: \"pre-triage\"")
        );
        assert!(
            created
                .output
                .ends_with("target/wasm32-wasip2/release/my_filter.wasm")
        );
        let error = new_plugin(&options("my-filter")).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
    }

    #[test]
    fn parses_kinds_and_languages() {
        assert_eq!("post-triage".parse::<World>(), Ok(World::PostTriage));
        assert_eq!("python".parse::<PluginLang>(), Ok(PluginLang::Python));
        assert!("go".parse::<PluginLang>().is_err());
    }
}
