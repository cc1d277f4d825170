//! The `plugins list|check|new` library functions against real files, including freshly scaffolded plugins.

use std::path::Path;
use std::process::Command;

use nightcrier_plugin_host::{
    NewPluginOptions, PluginLang, PluginsConfig, World, check_plugin, list_plugins, new_plugin,
};

use crate::support::{built, folder, shared_cache};

#[tokio::test]
async fn list_shows_worlds_versions_and_capabilities_as_table_and_json() {
    let folder = folder(
        &[
            ("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm"),
            ("plugins/dedup.wasm", "dedup.wasm"),
            ("plugins/slack.wasm", "slack.wasm"),
            ("fixtures/hostile-wit-major.wasm", "future.wasm"),
        ],
        "[plugin.slack]\nallowed_hosts = [\"https://hooks.slack.com:443\"]\n[plugin.slack.config]\nwebhook_url = \"https://hooks.slack.com/services/x\"\n",
    );
    let list = list_plugins(&folder.config).await.unwrap();
    let ids: Vec<&str> = list
        .plugins
        .iter()
        .map(|plugin| plugin.id.as_str())
        .collect();
    assert_eq!(ids, ["dedup", "kubernetes-mcp", "slack"]);
    let table = list.to_table();
    let slack_line = table
        .lines()
        .find(|line| line.starts_with("slack"))
        .unwrap();
    assert!(
        slack_line.contains("post-triage")
            && slack_line.contains("0.1.0")
            && slack_line.contains("http:https://hooks.slack.com:443"),
        "{table}"
    );
    assert!(
        table.contains("mcp:events_subscribe {\"mode\":\"faults\"} logger=kubernetes/faults"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("refused: ") && line.contains("future.wasm")),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&list.to_json().unwrap()).unwrap();
    assert_eq!(
        json["plugins"][2]["requested"]["outbound_hosts"][0],
        "https://hooks.slack.com:443"
    );
    assert_eq!(json["plugins"][1]["wit_version"], "0.1.1");
    assert_eq!(json["refused"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn check_passes_good_plugins_and_lists_every_reason_for_bad_ones() {
    let folder = folder(
        &[
            ("plugins/noise-filter.wasm", "noise-filter.wasm"),
            ("fixtures/hostile-wrong-world.wasm", "wrong.wasm"),
        ],
        "",
    );
    let summary = check_plugin(&folder.dir.path().join("noise-filter.wasm"), &folder.config)
        .await
        .unwrap();
    assert_eq!(summary.world, World::PreTriage);
    let failure = check_plugin(&folder.dir.path().join("wrong.wasm"), &folder.config)
        .await
        .unwrap_err();
    assert!(
        failure.reasons[0].contains("wrong.wasm")
            && failure.to_string().contains("fits no plugin world"),
        "{failure}"
    );
    let missing = check_plugin(&folder.dir.path().join("absent.wasm"), &folder.config)
        .await
        .unwrap_err();
    assert!(
        missing.reasons[0].contains("cannot read plugin file"),
        "{missing}"
    );

    let slack = crate::support::artefact("plugins/slack.wasm");
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n[plugin.slack.config]\nwebhook_url = \"https://hooks.slack.com/x\"\n",
        slack.parent().unwrap(),
        shared_cache()
    ))
    .unwrap();
    let failure = check_plugin(&slack, &config).await.unwrap_err();
    assert!(failure.reasons[0].contains("allowed_hosts"), "{failure}");
}

/// A refused file is told what it imports that the host does not offer, what it exports that the
/// host would call, and which contract versions the host accepts.
#[tokio::test]
async fn check_names_unoffered_imports_uncalled_exports_and_accepted_versions() {
    let folder = folder(
        &[
            ("fixtures/hostile-wit-major.wasm", "future.wasm"),
            ("fixtures/hostile-wrong-world.wasm", "wrong.wasm"),
        ],
        "",
    );
    let failure = check_plugin(&folder.dir.path().join("future.wasm"), &folder.config)
        .await
        .unwrap_err();
    let text = failure.to_string();
    assert!(
        failure.reasons.iter().any(|reason| reason
            == "it imports what this host does not offer: nightcrier:plugin/alerts@1.0.0"),
        "{text}"
    );
    assert!(
        failure.reasons.iter().any(|reason| reason
            == "it exports nothing this host calls: nightcrier:plugin/pre-triage-processor@1.0.0"),
        "{text}"
    );
    assert!(
        failure.reasons.iter().any(|reason| reason.starts_with(
            "this host accepts components built against nightcrier:plugin@0.1.x (released and frozen: 0.1.0; current: 0.1.1)"
        )),
        "{text}"
    );
    let failure = check_plugin(&folder.dir.path().join("wrong.wasm"), &folder.config)
        .await
        .unwrap_err();
    assert!(
        failure
            .reasons
            .iter()
            .any(|reason| reason == "it exports nothing this host calls: acme:other/greeter@0.1.0"),
        "{failure}"
    );
    assert!(!failure.to_string().contains("does not offer"), "{failure}");
}

/// `plugins check` applies the identity rule: a mismatched describe name, and another file of the
/// same plugin beside the one checked, are each a reason.
#[tokio::test]
async fn check_refuses_a_name_claim_and_a_second_file_of_the_plugin() {
    let folder = folder(
        &[
            ("fixtures/hostile.wasm", "impostor.wasm"),
            ("plugins/dedup.wasm", "dedup.wasm"),
            ("plugins/dedup.wasm", "Dedup.wasm"),
        ],
        "[plugin.impostor.config]\nname = \"slack\"\n",
    );
    let failure = check_plugin(&folder.dir.path().join("impostor.wasm"), &folder.config)
        .await
        .unwrap_err();
    assert!(
        failure.to_string().contains("claims to be plugin `slack`"),
        "{failure}"
    );
    let failure = check_plugin(&folder.dir.path().join("dedup.wasm"), &folder.config)
        .await
        .unwrap_err();
    assert_eq!(failure.reasons.len(), 1, "{failure}");
    assert!(
        failure.reasons[0].contains("Dedup.wasm") && failure.reasons[0].contains("same plugin"),
        "{failure}"
    );
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn scaffold_builds_and_passes_check(lang: PluginLang, kind: World) {
    let parent = tempfile::tempdir().unwrap();
    let name = format!(
        "my-{}-{}",
        kind.as_str(),
        if lang == PluginLang::Rust { "rs" } else { "py" }
    );
    let created = new_plugin(&NewPluginOptions {
        name: name.clone(),
        kind,
        lang,
        parent_dir: parent.path().to_owned(),
    })
    .unwrap();
    let target = built();
    match lang {
        PluginLang::Rust => run(Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(&created.dir)
            // Shared across runs so the scaffold's dependencies compile once.
            .env("CARGO_TARGET_DIR", target.join("scaffold"))),
        PluginLang::Python => run(Command::new("bash")
            .arg("build.sh")
            .current_dir(&created.dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    target.join("venv/bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )),
    }
    let output = match lang {
        PluginLang::Rust => target
            .join("scaffold/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        PluginLang::Python => created.output.clone(),
    };
    assert!(output.is_file(), "{} not built", output.display());
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n",
        parent.path(),
        shared_cache()
    ))
    .unwrap();
    let summary = check_plugin(Path::new(&output), &config).await.unwrap();
    assert_eq!(
        (summary.name.as_str(), summary.world),
        (name.as_str(), kind)
    );
}

#[tokio::test]
async fn rust_scaffolds_of_every_kind_build_and_pass_check() {
    for kind in [World::Source, World::PreTriage, World::PostTriage] {
        scaffold_builds_and_passes_check(PluginLang::Rust, kind).await;
    }
}

#[tokio::test]
async fn python_scaffold_builds_and_passes_check() {
    scaffold_builds_and_passes_check(PluginLang::Python, World::PostTriage).await;
}
