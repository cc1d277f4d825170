//! Test support: builds the plugins once (failing loudly without a toolchain) and sets up plugin folders.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use nightcrier_plugin_host::types::{AgentResult, FaultEvent, Incident, ResourceRef, Severity};
use nightcrier_plugin_host::{LoadError, MemoryKvStore, PluginHost, PluginsConfig};

pub(crate) fn plugins_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins")
}

/// Runs `plugins/build.sh` once per test process (the script itself locks against other processes).
pub(crate) fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = plugins_source().join("build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
        assert!(
            output.status.success(),
            "plugins/build.sh failed; the plugin tests need rustup, cargo and python3 with venv.\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        plugins_source().join("target")
    })
}

/// Path of an example plugin (`plugins/<name>.wasm`) or fixture (`fixtures/<name>.wasm`).
pub(crate) fn artefact(relative: &str) -> PathBuf {
    let path = built().join(relative);
    assert!(
        path.is_file(),
        "{} was not built by plugins/build.sh",
        path.display()
    );
    path
}

/// A precompiled-artefact cache shared by all tests and runs, so big guests compile once.
pub(crate) fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A temporary plugins folder holding copies of `files` (`(artefact, file name)`), plus its config.
pub(crate) struct Folder {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PluginsConfig,
}

pub(crate) fn folder(files: &[(&str, &str)], config_toml: &str) -> Folder {
    let dir = tempfile::tempdir().unwrap();
    for (source, name) in files {
        std::fs::copy(artefact(source), dir.path().join(name)).unwrap();
    }
    let text = format!(
        "dir = {:?}\ncache_dir = {:?}\n{config_toml}",
        dir.path(),
        shared_cache()
    );
    let config = PluginsConfig::from_toml(&text)
        .unwrap_or_else(|error| panic!("bad test config: {error}\n{text}"));
    Folder { dir, config }
}

pub(crate) async fn load(
    files: &[(&str, &str)],
    config_toml: &str,
) -> (PluginHost, Vec<LoadError>, Folder, Arc<MemoryKvStore>) {
    let folder = folder(files, config_toml);
    let kv = Arc::new(MemoryKvStore::new());
    let (host, refused) = PluginHost::load(folder.config.clone(), kv.clone())
        .await
        .unwrap();
    (host, refused, folder, kv)
}

pub(crate) fn incident(namespace: Option<&str>, severity: Severity) -> Incident {
    Incident {
        id: "inc-1".to_owned(),
        cluster: "kind-dev".to_owned(),
        event: FaultEvent {
            fault_id: "a817ebcffcb2cf13".to_owned(),
            cluster: "kind-dev".to_owned(),
            resource: ResourceRef {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: "checkout-7d9f8b6c5-x2k4q".to_owned(),
                namespace: namespace.map(str::to_owned),
                uid: Some("6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f".to_owned()),
            },
            fault_type: "CrashLoop".to_owned(),
            severity,
            context: "Container entered CrashLoopBackOff state, restart count: 3".to_owned(),
            timestamp: "2025-12-20T14:07:31Z".to_owned(),
            labels: Vec::new(),
        },
        labels: Vec::new(),
        annotations: Vec::new(),
        priority: 0,
        agent_profile: None,
    }
}

pub(crate) fn agent_result(report: &str) -> AgentResult {
    AgentResult {
        exit_code: 0,
        duration_ms: 155_000,
        failure_reason: None,
        report_markdown: report.to_owned(),
        artifact_names: vec!["investigation.md".to_owned()],
    }
}

/// The ~1 KB faults-mode notification data of the protocol reference §4.4.
pub(crate) const CRASH_LOOP: &str = r#"{"subscriptionId":"sub-3f2a9c1e","cluster":"kind-dev","faultId":"a817ebcffcb2cf13","faultType":"CrashLoop","severity":"critical","resource":{"apiVersion":"v1","kind":"Pod","name":"checkout-7d9f8b6c5-x2k4q","namespace":"shop","uid":"6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f"},"context":"Container entered CrashLoopBackOff state, restart count: 3, waiting message: back-off 40s restarting failed container=api pod=checkout-7d9f8b6c5-x2k4q_shop(6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f), last exit code: 1, last reason: Error","timestamp":"2025-12-20T14:07:31Z"}"#;
