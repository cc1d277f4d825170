//! `nightcrier plugins new`: writes a self-contained plugin project (Rust, Python or C) that builds as
//! generated with one command, `./build.sh`, which fetches its own pinned tools.

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
    /// Python with componentize-py 0.25.1 (in a venv the build makes).
    Python,
    /// C with `wit-bindgen c` 0.63, clang and wasi-libc, made a component by `wasm-tools` with the
    /// WASI preview 1 reactor adapter of wasmtime 48.
    C,
}

impl std::str::FromStr for PluginLang {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rust" => Ok(PluginLang::Rust),
            "python" => Ok(PluginLang::Python),
            "c" => Ok(PluginLang::C),
            other => Err(format!(
                "unknown plugin language {other} (expected rust, python or c)"
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
    /// Command to build it, run inside `dir` (`./build.sh` for every language).
    pub build_command: String,
    /// Where the build puts the component (`<dir>/<name>.wasm`).
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
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{snake}", &name.replace('-', "_"))
            .replace("{world}", world)
            .replace("{world_snake}", &world.replace('-', "_"))
    };
    match options.lang {
        PluginLang::Rust => {
            write(&dir, "Cargo.toml", &fill(RUST_CARGO))?;
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
            write(&dir, "src/lib.rs", &fill(body))?;
            write(&dir, "build.sh", &fill(RUST_BUILD))?;
            write(&dir, ".gitignore", &fill("/target\n/{name}.wasm\n"))?;
        }
        PluginLang::Python => {
            let body = match options.kind {
                World::Source => PYTHON_SOURCE,
                World::PreTriage => PYTHON_PRE_TRIAGE,
                World::PostTriage => PYTHON_POST_TRIAGE,
            };
            write(&dir, "app.py", &fill(body))?;
            write(&dir, "build.sh", &fill(PYTHON_BUILD))?;
            write(&dir, ".gitignore", &fill("/.venv\n/{name}.wasm\n"))?;
        }
        PluginLang::C => {
            let body = match options.kind {
                World::Source => C_SOURCE,
                World::PreTriage => C_PRE_TRIAGE,
                World::PostTriage => C_POST_TRIAGE,
            };
            write(&dir, "plugin.c", &fill(body))?;
            write(&dir, "build.sh", &fill(C_BUILD))?;
            write(&dir, "adapter/Cargo.toml", C_ADAPTER_CARGO)?;
            write(
                &dir,
                "adapter/lib.rs",
                "//! Empty: this crate only pins the WASI preview 1 adapter for build.sh.\n",
            )?;
            write(
                &dir,
                ".gitignore",
                &fill("/build\n/adapter/target\n/{name}.wasm\n"),
            )?;
        }
    }
    make_executable(&dir.join("build.sh"))?;
    Ok(NewPlugin {
        output: dir.join(format!("{name}.wasm")),
        build_command: "./build.sh".to_owned(),
        dir,
    })
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {name}.wasm with one command. Needs rustup and cargo; adds the wasm32-wasip2 target when
# missing; wit-bindgen is pinned in Cargo.toml and fetched by cargo.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >&2
cargo build --release
cp -f "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{snake}.wasm" {name}.wasm
echo "built {name}.wasm" >&2
"#;

const PYTHON_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {name}.wasm from app.py with one command. The first run makes .venv/ with the pinned
# componentize-py. Needs python3 with the venv module (Debian: python3-venv) and, the first time,
# network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")"
COMPONENTIZE_PY_VERSION="0.25.1"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    .venv/bin/pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
fi
.venv/bin/componentize-py -d wit -w {world} componentize app -o {name}.wasm >&2
echo "built {name}.wasm" >&2
"#;

const C_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {name}.wasm from plugin.c with one command, fetching its pinned tools the first time.
#
# Needs clang, wasm-ld, wasi-libc and the wasm32 compiler runtime (Debian:
# apt-get install clang lld wasi-libc libclang-rt-dev-wasm32), cargo, and network access to
# crates.io the first time. Pinned tools: wit-bindgen-cli 0.63.0 and wasm-tools 1.262.0, installed
# with cargo into $NIGHTCRIER_PLUGIN_TOOLS (default ~/.cache/nightcrier/plugin-tools); the WASI
# preview 1 reactor adapter of wasmtime 48.0.8, from the crate pinned in adapter/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${NIGHTCRIER_PLUGIN_TOOLS:-$HOME/.cache/nightcrier/plugin-tools}"
mkdir -p "$TOOLS"

for tool in clang wasm-ld; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing; on Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
        exit 1
    }
done

install_tool() {
    local crate="$1" version="$2" binary="$3" features="$4"
    if [ "$("$TOOLS/bin/$binary" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
        echo "build.sh: installing $crate $version into $TOOLS" >&2
        cargo install --quiet --locked --root "$TOOLS" "$crate" --version "$version" \
            --no-default-features --features "$features" >&2
    fi
}
(
    flock 9
    install_tool wit-bindgen-cli 0.63.0 wit-bindgen c
    install_tool wasm-tools 1.262.0 wasm-tools component
) 9>"$TOOLS/.lock"

# `cargo metadata` downloads and unpacks the pinned adapter crate; the bytes are in its artefacts/.
adapter_crate="$(cargo metadata --format-version 1 --manifest-path adapter/Cargo.toml \
    | grep -o '"manifest_path":"[^"]*/wasi-preview1-component-adapter-provider-[0-9.]*/Cargo.toml"' \
    | sed -e 's/^"manifest_path":"//' -e 's|/Cargo.toml"$||')"
adapter="$adapter_crate/artefacts/wasi_snapshot_preview1.reactor.wasm"
[ -f "$adapter" ] || { echo "build.sh: no WASI adapter at $adapter" >&2; exit 1; }

rm -rf build && mkdir -p build
"$TOOLS/bin/wit-bindgen" c wit --world {world} --out-dir build >&2
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Wno-unused-parameter \
    -I build -o build/core.wasm plugin.c build/{world_snake}.c build/{world_snake}_component_type.o
"$TOOLS/bin/wasm-tools" component new build/core.wasm \
    --adapt "wasi_snapshot_preview1=$adapter" -o {name}.wasm
echo "built {name}.wasm" >&2
"#;

const C_ADAPTER_CARGO: &str = r#"# Pins the WASI preview 1 adapter (its bytes ship in this crate, at wasmtime's version);
# build.sh reads artefacts/wasi_snapshot_preview1.reactor.wasm from the unpacked crate. Nothing is compiled.
[package]
name = "adapter"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
path = "lib.rs"

[dependencies]
wasi-preview1-component-adapter-provider = "=48.0.8"

[workspace]
"#;

const C_SOURCE: &str = r#"/* {name}: a nightcrier source plugin in C. Build with ./build.sh. */

#include <stdlib.h>
#include <string.h>

#include "source.h"

/* The host takes strings as UTF-8 only. */
static bool valid_utf8(const uint8_t *bytes, size_t length) {
    size_t index = 0;
    while (index < length) {
        uint8_t lead = bytes[index];
        size_t extra = lead < 0x80 ? 0 : (lead >> 5) == 0x6 ? 1 : (lead >> 4) == 0xe ? 2 : (lead >> 3) == 0x1e ? 3 : 4;
        if (extra == 4 || length - index <= extra) {
            return false;
        }
        for (size_t next = 1; next <= extra; next++) {
            if ((bytes[index + next] & 0xc0) != 0x80) {
                return false;
            }
        }
        index += extra + 1;
    }
    return true;
}

void exports_nightcrier_plugin_event_source_describe(exports_nightcrier_plugin_event_source_source_info_t *ret) {
    memset(ret, 0, sizeof *ret); /* no capabilities requested */
    source_string_dup(&ret->info.name, "{name}");
    source_string_dup(&ret->info.version, "0.1.0");
    source_string_dup(&ret->info.description, "Turns webhook bodies into fault events");
    ret->feed.tag = EXPORTS_NIGHTCRIER_PLUGIN_EVENT_SOURCE_FEED_WEBHOOK;
    source_string_dup(&ret->feed.val.webhook.path, "/{name}");
}

bool exports_nightcrier_plugin_event_source_decode(exports_nightcrier_plugin_event_source_envelope_t *envelope,
                                                   exports_nightcrier_plugin_event_source_list_fault_event_t *ret,
                                                   exports_nightcrier_plugin_event_source_decode_error_t *err) {
    if (envelope->body.len == 0 || !valid_utf8(envelope->body.ptr, envelope->body.len)) {
        err->tag = EXPORTS_NIGHTCRIER_PLUGIN_EVENT_SOURCE_DECODE_ERROR_MALFORMED;
        source_string_dup(&err->val.malformed, "the body is empty or not UTF-8");
        exports_nightcrier_plugin_event_source_envelope_free(envelope);
        return false;
    }
    exports_nightcrier_plugin_event_source_fault_event_t *event = calloc(1, sizeof *event);
    source_string_dup(&event->fault_type, "Custom");
    event->severity = NIGHTCRIER_PLUGIN_TYPES_SEVERITY_WARNING;
    /* the body becomes the context; the envelope's strings move into the event */
    event->context = (source_string_t){envelope->body.ptr, envelope->body.len};
    envelope->body = (source_list_u8_t){NULL, 0};
    if (envelope->cluster.is_some) {
        event->cluster = envelope->cluster.val;
        envelope->cluster.is_some = false;
    }
    exports_nightcrier_plugin_event_source_envelope_free(envelope);
    ret->ptr = event;
    ret->len = 1;
    return true;
}
"#;

const C_PRE_TRIAGE: &str = r#"/* {name}: a nightcrier pre-triage plugin in C. Build with ./build.sh. */

#include <stdlib.h>
#include <string.h>

#include "pre_triage.h"

void exports_nightcrier_plugin_pre_triage_processor_describe(exports_nightcrier_plugin_pre_triage_processor_plugin_info_t *ret) {
    memset(ret, 0, sizeof *ret); /* no capabilities requested */
    pre_triage_string_dup(&ret->name, "{name}");
    pre_triage_string_dup(&ret->version, "0.1.0");
    pre_triage_string_dup(&ret->description, "Decides whether an incident is triaged");
}

bool exports_nightcrier_plugin_pre_triage_processor_pre_triage(exports_nightcrier_plugin_pre_triage_processor_incident_t *incident,
                                                               exports_nightcrier_plugin_pre_triage_processor_decision_t *ret,
                                                               exports_nightcrier_plugin_pre_triage_processor_plugin_error_t *err) {
    pre_triage_string_t message;
    pre_triage_string_set(&message, "pre-triage");
    nightcrier_plugin_host_pair_t field = {{(uint8_t *)"incident", 8}, incident->id};
    nightcrier_plugin_host_list_pair_t fields = {&field, 1};
    nightcrier_plugin_host_log(NIGHTCRIER_PLUGIN_HOST_LEVEL_DEBUG, &message, &fields);

    memset(ret, 0, sizeof *ret);
    ret->tag = EXPORTS_NIGHTCRIER_PLUGIN_PRE_TRIAGE_PROCESSOR_DECISION_PROCEED;
    exports_nightcrier_plugin_pre_triage_processor_pair_t *label = calloc(1, sizeof *label);
    pre_triage_string_dup(&label->f0, "{name}");
    pre_triage_string_dup(&label->f1, "seen");
    ret->val.proceed.labels.ptr = label;
    ret->val.proceed.labels.len = 1;
    exports_nightcrier_plugin_pre_triage_processor_incident_free(incident);
    return true;
}
"#;

const C_POST_TRIAGE: &str = r#"/* {name}: a nightcrier post-triage plugin in C. Build with ./build.sh. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "post_triage.h"

void exports_nightcrier_plugin_post_triage_processor_describe(exports_nightcrier_plugin_post_triage_processor_plugin_info_t *ret) {
    memset(ret, 0, sizeof *ret); /* no capabilities requested */
    post_triage_string_dup(&ret->name, "{name}");
    post_triage_string_dup(&ret->version, "0.1.0");
    post_triage_string_dup(&ret->description, "Acts on the triage report");
}

bool exports_nightcrier_plugin_post_triage_processor_post_triage(exports_nightcrier_plugin_post_triage_processor_incident_t *incident,
                                                                 exports_nightcrier_plugin_post_triage_processor_agent_result_t *agent_result,
                                                                 exports_nightcrier_plugin_post_triage_processor_outcome_t *ret,
                                                                 exports_nightcrier_plugin_post_triage_processor_plugin_error_t *err) {
    size_t lines = 0;
    for (size_t index = 0; index < agent_result->report_markdown.len; index++) {
        if (agent_result->report_markdown.ptr[index] == '\n') {
            lines++;
        }
    }
    char count[24];
    snprintf(count, sizeof count, "%zu", lines);
    memset(ret, 0, sizeof *ret); /* report_markdown none: keep the report */
    exports_nightcrier_plugin_post_triage_processor_pair_t *field = calloc(1, sizeof *field);
    post_triage_string_dup(&field->f0, "report-lines");
    post_triage_string_dup(&field->f1, count);
    ret->fields.ptr = field;
    ret->fields.len = 1;
    exports_nightcrier_plugin_post_triage_processor_incident_free(incident);
    exports_nightcrier_plugin_post_triage_processor_agent_result_free(agent_result);
    return true;
}
"#;

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

const RUST_SOURCE: &str = r#"//! {name}: a nightcrier source plugin. Build with ./build.sh.

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

const RUST_PRE_TRIAGE: &str = r#"//! {name}: a nightcrier pre-triage plugin. Build with ./build.sh.

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

const RUST_POST_TRIAGE: &str = r#"//! {name}: a nightcrier post-triage plugin. Build with ./build.sh.

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
        assert!(created.output.ends_with("my-filter/my-filter.wasm"));
        assert_eq!(created.build_command, "./build.sh");
        let error = new_plugin(&options("my-filter")).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
    }

    #[test]
    fn parses_kinds_and_languages() {
        assert_eq!("post-triage".parse::<World>(), Ok(World::PostTriage));
        assert_eq!("python".parse::<PluginLang>(), Ok(PluginLang::Python));
        assert_eq!("c".parse::<PluginLang>(), Ok(PluginLang::C));
        assert!("go".parse::<PluginLang>().is_err());
    }
}
