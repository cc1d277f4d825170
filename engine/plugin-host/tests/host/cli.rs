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
    assert_eq!(json["plugins"][1]["wit_version"], "0.1.2");
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
            "this host accepts components built against nightcrier:plugin@0.1.x (released and frozen: 0.1.0, 0.1.1; current: 0.1.2)"
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
    let suffix = match lang {
        PluginLang::Rust => "rs",
        PluginLang::Python => "py",
        PluginLang::C => "c",
    };
    let name = format!("my-{}-{suffix}", kind.as_str());
    let created = new_plugin(&NewPluginOptions {
        name: name.clone(),
        kind,
        lang,
        parent_dir: parent.path().to_owned(),
    })
    .unwrap();
    assert_eq!(created.build_command, "./build.sh");
    let target = built();
    // The one build command, as an author runs it; only caches are shared across runs: the Rust
    // dependencies, the pip downloads, and the pinned C tools plugins/build.sh installed.
    let mut build = Command::new("bash");
    build
        .arg(created.dir.join("build.sh"))
        .current_dir(&created.dir);
    match lang {
        PluginLang::Rust => build.env("CARGO_TARGET_DIR", target.join("scaffold")),
        PluginLang::Python => build.env_remove("VIRTUAL_ENV"),
        PluginLang::C => build.env("NIGHTCRIER_PLUGIN_TOOLS", target.join("tools")),
    };
    run(&mut build);
    assert!(
        created.output.is_file(),
        "{} not built",
        created.output.display()
    );
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n",
        created.dir,
        shared_cache()
    ))
    .unwrap();
    let summary = check_plugin(Path::new(&created.output), &config)
        .await
        .unwrap();
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

/// The Python scaffold's build makes its own venv with the pinned componentize-py.
#[tokio::test]
async fn python_scaffold_builds_and_passes_check() {
    scaffold_builds_and_passes_check(PluginLang::Python, World::PostTriage).await;
}

#[tokio::test]
async fn c_scaffolds_of_every_kind_build_and_pass_check() {
    for kind in [World::Source, World::PreTriage, World::PostTriage] {
        scaffold_builds_and_passes_check(PluginLang::C, kind).await;
    }
}
