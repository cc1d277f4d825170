//! Loading: the cache, refusal of corrupt files, wrong worlds, WIT major mismatches and missing grants.

use nightcrier_plugin_host::{LoadError, World};

use crate::support::load;

#[tokio::test]
async fn refuses_bad_files_with_the_file_and_reason_and_keeps_the_good_ones() {
    let (host, refused, folder, _kv) = load(
        &[
            ("plugins/noise-filter.wasm", "noise-filter.wasm"),
            ("fixtures/hostile-wrong-world.wasm", "wrong-world.wasm"),
            ("fixtures/hostile-wit-major.wasm", "future.wasm"),
        ],
        "",
    )
    .await;
    // Corrupt files are generated here: random bytes and a truncated component.
    std::fs::write(
        folder.dir.path().join("garbage.wasm"),
        b"\0asm this is not a component",
    )
    .unwrap();
    let good = std::fs::read(folder.dir.path().join("noise-filter.wasm")).unwrap();
    std::fs::write(
        folder.dir.path().join("truncated.wasm"),
        &good[..good.len() / 2],
    )
    .unwrap();
    drop((host, refused));
    let kv = std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new());
    let (host, refused) = nightcrier_plugin_host::PluginHost::load(folder.config.clone(), kv)
        .await
        .unwrap();

    assert_eq!(
        host.chain(World::PreTriage),
        vec!["noise-filter".to_owned()]
    );
    let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 4, "{messages:#?}");
    let find = |file: &str| {
        refused
            .iter()
            .find(|error| error.to_string().contains(file))
            .unwrap_or_else(|| panic!("{file} not refused: {messages:#?}"))
    };
    assert!(
        matches!(find("garbage.wasm"), LoadError::Corrupt { .. }),
        "{messages:#?}"
    );
    assert!(
        matches!(find("truncated.wasm"), LoadError::Corrupt { .. }),
        "{messages:#?}"
    );
    let wrong = find("wrong-world.wasm");
    assert!(
        matches!(wrong, LoadError::NoWorld { .. })
            && wrong.to_string().contains("acme:other/greeter@0.1.0"),
        "{wrong}"
    );
    let future = find("future.wasm");
    assert!(
        matches!(future, LoadError::UnsupportedVersion { .. }),
        "{future}"
    );
    assert!(
        future.to_string().contains("1.0.0") && future.to_string().contains("0.1.x"),
        "{future}"
    );

    // The host still serves the good plugin.
    let incident = crate::support::incident(
        Some("shop"),
        nightcrier_plugin_host::types::Severity::Critical,
    );
    assert!(host.pre_triage("noise-filter", &incident).await.is_ok());
}

#[tokio::test]
async fn refuses_a_plugin_whose_requested_capability_is_not_granted() {
    let webhook =
        "[plugin.slack.config]\nwebhook_url = \"https://hooks.slack.com/services/T/B/x\"\n";
    let (host, refused, _folder, _kv) =
        load(&[("plugins/slack.wasm", "slack.wasm")], webhook).await;
    assert!(host.plugins().is_empty());
    let [error] = refused.as_slice() else {
        panic!("{refused:?}")
    };
    assert!(
        matches!(
            error,
            LoadError::MissingGrant { missing, .. }
                if missing.len() == 1 && missing[0].grant == "allowed_hosts"
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("slack@0.1.0")
            && message.contains("https://hooks.slack.com:443")
            && message.contains("allowed_hosts"),
        "{message}"
    );

    let granted =
        format!("{webhook}[plugin.slack]\nallowed_hosts = [\"https://hooks.slack.com:443\"]\n");
    let (host, refused, _folder, _kv) =
        load(&[("plugins/slack.wasm", "slack.wasm")], &granted).await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("slack").unwrap();
    assert_eq!(
        summary.requested.outbound_hosts,
        vec!["https://hooks.slack.com:443".to_owned()]
    );
    assert_eq!(
        summary.granted.outbound_hosts,
        vec!["https://hooks.slack.com:443".to_owned()]
    );
}

#[tokio::test]
async fn the_second_load_uses_the_precompiled_cache() {
    let (_host, refused, folder, _kv) = load(
        &[("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm")],
        "",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let private = tempfile::tempdir().unwrap();
    let mut config = folder.config.clone();
    config.cache_dir = Some(private.path().to_owned());
    let kv = std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new());
    let (first, _) = nightcrier_plugin_host::PluginHost::load(config.clone(), kv.clone())
        .await
        .unwrap();
    // The artefact is memory-mapped by `first`; it must be gone before the file is damaged in place.
    drop(first);
    // one folder per wasmtime version, holding the artefact
    let versions: Vec<_> = std::fs::read_dir(private.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(
        versions[0]
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("wasmtime-")),
        "{versions:?}"
    );
    let artefacts: Vec<_> = std::fs::read_dir(&versions[0])
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(artefacts.len(), 1, "{artefacts:?}");
    assert!(
        artefacts[0]
            .extension()
            .is_some_and(|extension| extension == "cwasm")
    );
    // A damaged artefact is discarded and rebuilt, not trusted.
    std::fs::write(&artefacts[0], b"damaged").unwrap();
    let (second, refused) = nightcrier_plugin_host::PluginHost::load(config, kv)
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(second.plugins().len(), 1);
    assert!(std::fs::metadata(&artefacts[0]).unwrap().len() > 1000);
}

/// A plugin's file name is its identity: a component claiming another plugin's name is refused
/// (naming the file and the claim), and the plugin it imitates is unaffected.
#[tokio::test]
async fn a_plugin_claiming_another_plugins_name_is_refused() {
    let forged = "kubernetes-mcp\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J";
    let (host, refused, _folder, _kv) = load(
        &[
            ("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm"),
            ("fixtures/hostile.wasm", "impostor.wasm"),
            ("fixtures/hostile.wasm", "forger.wasm"),
        ],
        &format!(
            "[plugin.impostor.config]\nname = \"kubernetes-mcp\"\n[plugin.forger.config]\nname = {}\n",
            toml::Value::String(forged.to_owned())
        ),
    )
    .await;
    let ids: Vec<String> = host.plugins().into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["kubernetes-mcp"]);
    assert_eq!(
        host.plugin("kubernetes-mcp").unwrap().label(),
        "kubernetes-mcp@0.1.0"
    );
    let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 2, "{messages:#?}");
    let impostor = refused
        .iter()
        .find(|error| error.to_string().contains("impostor.wasm"))
        .unwrap();
    assert!(
        matches!(impostor, LoadError::NameMismatch { claimed, id, .. } if claimed == "kubernetes-mcp" && id == "impostor"),
        "{impostor}"
    );
    assert!(
        impostor.to_string().contains(
            "claims to be plugin `kubernetes-mcp`, but its file name makes it `impostor`"
        ),
        "{impostor}"
    );
    let forger = refused
        .iter()
        .find(|error| error.to_string().contains("forger.wasm"))
        .unwrap();
    assert!(
        matches!(forger, LoadError::NameMismatch { claimed, .. } if claimed == forged),
        "the claim is kept as received: {forger:?}"
    );
    let message = forger.to_string();
    assert!(
        !message.contains('\n') && !message.contains('\u{1b}') && message.contains("\\n2026"),
        "{message:?}"
    );
}

/// Names that differ only in case or `-`/`_` are one plugin: two such files are both refused,
/// each message naming both files; alone, either loads (cargo writes `kubernetes_mcp.wasm`).
#[tokio::test]
async fn two_files_of_one_plugin_are_both_refused() {
    let (host, refused, _folder, _kv) = load(
        &[
            ("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm"),
            ("plugins/kubernetes-mcp.wasm", "kubernetes_mcp.wasm"),
            ("plugins/dedup.wasm", "dedup.wasm"),
        ],
        "",
    )
    .await;
    let ids: Vec<String> = host.plugins().into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["dedup"]);
    let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 2, "{messages:#?}");
    for message in &messages {
        assert!(
            message.contains("kubernetes-mcp.wasm")
                && message.contains("kubernetes_mcp.wasm")
                && message.contains("same plugin `kubernetes-mcp`"),
            "{message}"
        );
    }
    assert!(
        refused
            .iter()
            .all(|error| matches!(error, LoadError::DuplicateId { .. }))
    );

    let (host, refused, _folder, _kv) = load(
        &[("plugins/kubernetes-mcp.wasm", "kubernetes_mcp.wasm")],
        "",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("kubernetes_mcp").unwrap();
    assert_eq!(summary.name, "kubernetes-mcp");
    assert_eq!(summary.label(), "kubernetes_mcp@0.1.0");
}
