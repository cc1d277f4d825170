//! Library side of `nightcrier plugins list|check|new`: plain functions taking config and returning data or text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use crate::config::PluginsConfig;
use crate::detect::{accepted_contract, export_called, import_offered};
use crate::error::LoadError;
use crate::kv::MemoryKvStore;
use crate::runtime::{PluginHost, PluginSummary, plugin_identity};
use crate::text::escape_untrusted;
use crate::types::Feed;

/// Result of `plugins list`: loaded plugins and refused files.
#[derive(Debug, Clone, Serialize)]
pub struct PluginList {
    /// Plugins that loaded, by id.
    pub plugins: Vec<PluginSummary>,
    /// Files that were refused, with the reason.
    pub refused: Vec<RefusedPlugin>,
}

/// A refused plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedPlugin {
    /// Why (the message names the file or plugin).
    pub reason: String,
}

fn feed_text(feed: Option<&Feed>) -> String {
    match feed {
        Some(Feed::Mcp(feed)) => format!(
            "mcp:{} {} logger={}",
            feed.tool, feed.arguments, feed.logger
        ),
        Some(Feed::Webhook(feed)) => format!("webhook:{}", feed.path),
        Some(Feed::Poll(feed)) => format!("poll:{} every {}s", feed.url, feed.interval_seconds),
        None => "-".to_owned(),
    }
}

impl PluginList {
    /// A fixed-width table for terminals; refused files follow the table. Everything a plugin
    /// supplied (names, versions, capabilities, feeds, refusal reasons) is escaped.
    pub fn to_table(&self) -> String {
        let header = [
            "ID",
            "NAME",
            "VERSION",
            "WORLD",
            "WIT",
            "REQUESTED",
            "GRANTED",
            "FEED",
        ];
        let rows: Vec<[String; 8]> = self
            .plugins
            .iter()
            .map(|plugin| {
                [
                    plugin.id.clone(),
                    plugin.name.clone(),
                    plugin.version.clone(),
                    if plugin.handles_alerts {
                        format!("{}+alerts", plugin.world)
                    } else {
                        plugin.world.to_string()
                    },
                    plugin.wit_version.clone(),
                    plugin.requested.to_string(),
                    plugin.granted.to_string(),
                    feed_text(plugin.feed.as_ref()),
                ]
                .map(|cell| escape_untrusted(&cell).into_owned())
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = line(&header.map(str::to_owned));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for refused in &self.refused {
            out.push_str(&format!("refused: {}\n", escape_untrusted(&refused.reason)));
        }
        out
    }

    /// Pretty JSON: `{"plugins": [...], "refused": [...]}`.
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string_pretty(self).context("failed to encode the plugin list")
    }
}

/// `nightcrier plugins list --plugins DIR`: load every plugin in `config.dir` with the operator's grants.
pub async fn list_plugins(config: &PluginsConfig) -> anyhow::Result<PluginList> {
    let (host, refused) = PluginHost::load(config.clone(), Arc::new(MemoryKvStore::new())).await?;
    Ok(PluginList {
        plugins: host.plugins(),
        refused: refused
            .iter()
            .map(|error| RefusedPlugin {
                reason: error.to_string(),
            })
            .collect(),
    })
}

/// Why `plugins check` failed: every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} failed the check: {}", path.display(), reasons.join("; "))]
pub struct CheckFailure {
    /// The file checked.
    pub path: PathBuf,
    /// Every problem found.
    pub reasons: Vec<String>,
}

/// `nightcrier plugins check PATH`: load one file as the engine would (with the grants configured
/// for its id, if any) and report every problem. An `Err` means a non-zero exit.
pub async fn check_plugin(
    path: &Path,
    config: &PluginsConfig,
) -> Result<PluginSummary, CheckFailure> {
    let failure = |reasons: Vec<String>| CheckFailure {
        path: path.to_owned(),
        reasons,
    };
    if path.extension().is_none_or(|extension| extension != "wasm") {
        return Err(failure(vec!["plugin files must end in .wasm".to_owned()]));
    }
    let (host, refused) = PluginHost::load_files(
        config.clone(),
        Arc::new(MemoryKvStore::new()),
        &[path.to_owned()],
    )
    .await
    .map_err(|error| failure(vec![format!("{error:#}")]))?;
    let mut reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
    let contract_refusal = refused.iter().any(|error| {
        matches!(
            error,
            LoadError::NoWorld { .. }
                | LoadError::UnsupportedVersion { .. }
                | LoadError::Link { .. }
        )
    });
    if contract_refusal && let Some((imports, exports)) = host.component_names(path).await {
        reasons.extend(contract_mismatch(&imports, &exports));
        reasons.push(accepted_contract());
    }
    if let Some(duplicate) = same_plugin_beside(path).await {
        reasons.push(duplicate.to_string());
    }
    let summary = host.plugins().into_iter().next();
    if let Some(summary) = &summary {
        if summary.name.trim().is_empty() {
            reasons.push("describe returns an empty name".to_owned());
        }
        if summary.version.trim().is_empty() {
            reasons.push("describe returns an empty version".to_owned());
        }
    } else if reasons.is_empty() {
        reasons.push("the file was not loaded (is it disabled in the configuration?)".to_owned());
    }
    match summary {
        Some(summary) if reasons.is_empty() => Ok(summary),
        _ => Err(failure(reasons)),
    }
}

/// What a refused component imports that the host does not offer, and what it exports when the
/// host calls none of it (one line each).
fn contract_mismatch(imports: &[String], exports: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let missing: Vec<&str> = imports
        .iter()
        .filter(|name| !import_offered(name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        lines.push(format!(
            "it imports what this host does not offer: {}",
            missing.join(", ")
        ));
    }
    if !exports.iter().any(|name| export_called(name)) {
        lines.push(format!(
            "it exports nothing this host calls: {}",
            if exports.is_empty() {
                "no exports".to_owned()
            } else {
                exports.join(", ")
            }
        ));
    }
    lines
}

/// The refusal `serve` would give `path` because other files in its folder are the same plugin.
async fn same_plugin_beside(path: &Path) -> Option<LoadError> {
    let id = plugin_identity(&path.file_stem()?.to_string_lossy());
    let mut entries = tokio::fs::read_dir(path.parent()?).await.ok()?;
    let mut others = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let other = entry.path();
        let same = other
            .extension()
            .is_some_and(|extension| extension == "wasm")
            && other.file_name() != path.file_name()
            && other
                .file_stem()
                .is_some_and(|stem| plugin_identity(&stem.to_string_lossy()) == id);
        if same {
            others.push(other);
        }
    }
    others.sort();
    (!others.is_empty()).then(|| LoadError::DuplicateId {
        path: path.to_owned(),
        others,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::World;
    use crate::runtime::CapabilitySet;

    #[test]
    fn mismatch_names_unoffered_imports_and_uncalled_exports() {
        let names = |list: &[&str]| {
            list.iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>()
        };
        let lines = contract_mismatch(
            &names(&[
                "wasi:io/streams@0.2.3",
                "nightcrier:plugin/host@0.2.0",
                "acme:other/greeter@0.1.0",
            ]),
            &names(&["nightcrier:plugin/pre-triage-processor@0.2.0"]),
        );
        assert_eq!(
            lines,
            [
                "it imports what this host does not offer: nightcrier:plugin/host@0.2.0, acme:other/greeter@0.1.0",
                "it exports nothing this host calls: nightcrier:plugin/pre-triage-processor@0.2.0",
            ]
        );
        assert!(
            contract_mismatch(
                &names(&["nightcrier:plugin/host@0.1.0"]),
                &names(&["nightcrier:plugin/event-source@0.1.0"])
            )
            .is_empty()
        );
    }

    #[test]
    fn table_lists_plugins_and_refusals() {
        let list = PluginList {
            plugins: vec![PluginSummary {
                id: "dedup".into(),
                name: "dedup".into(),
                version: "0.1.0".into(),
                description: String::new(),
                world: World::PreTriage,
                handles_alerts: false,
                wit_version: "0.1.0".into(),
                path: "p/dedup.wasm".into(),
                requested: CapabilitySet::default(),
                granted: CapabilitySet {
                    env_vars: vec!["TOKEN".into()],
                    ..CapabilitySet::default()
                },
                feed: None,
                reuses_instances: false,
                deadline_ms: 100,
                memory_mib: 64,
            }],
            refused: vec![RefusedPlugin {
                reason: "x.wasm fits no plugin world".into(),
            }],
        };
        let table = list.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID"), "{table}");
        assert!(
            lines[1].starts_with("dedup")
                && lines[1].contains("pre-triage")
                && lines[1].contains("env:TOKEN"),
            "{table}"
        );
        assert_eq!(lines[2], "refused: x.wasm fits no plugin world");
        assert_eq!(lines.len(), 3, "{table}");
        let json: serde_json::Value = serde_json::from_str(&list.to_json().unwrap()).unwrap();
        assert_eq!(json["plugins"][0]["world"], "pre-triage");

        let mut forged = list.clone();
        forged.plugins[0].version = "1\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J".into();
        forged.refused[0].reason = "y.wasm claims to be plugin `a\rb`".into();
        let table = forged.to_table();
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(
            !table.contains('\u{1b}') && !table.contains('\r'),
            "{table:?}"
        );
        assert!(
            table.contains("1\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[2J"),
            "{table}"
        );
        assert_eq!(json["plugins"][0]["granted"]["env_vars"][0], "TOKEN");
    }
}
