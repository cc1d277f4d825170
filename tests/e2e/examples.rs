//! The shipped example configs and events are valid.

use std::path::Path;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn example_configs_load() {
    for name in ["nightcrier.toml", "nightcrier-postgres.toml"] {
        let settings = nightcrier::config::load(Some(&examples().join(name)), None)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(settings.default_profile, "claude", "{name}");
        assert!(settings.clusters.contains_key("kind-dev"), "{name}");
    }
}

#[test]
fn a_bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[workers]\nconcurrency = 2\nlease = 5\n").unwrap();
    let error = format!(
        "{:#}",
        nightcrier::config::load(Some(&path), None).unwrap_err()
    );
    assert!(
        error.contains("bad.toml") && error.contains("lease"),
        "{error}"
    );
}

#[tokio::test]
async fn example_events_decode_through_the_bundled_plugin() {
    let dir = crate::support::built_plugins();
    let (host, refused) = nightcrier_plugin_host::PluginHost::load_files(
        nightcrier_plugin_host::PluginsConfig::new(&dir),
        std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new()),
        &[dir.join("kubernetes-mcp.wasm")],
    )
    .await
    .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let decoder = nightcrier::ingest::Decoder::new(host.clone(), Default::default());
    for entry in std::fs::read_dir(examples().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let message = nightcrier::ingest::message_for(
            &host,
            "kubernetes-mcp",
            None,
            std::fs::read(&path).unwrap(),
            chrono::Utc::now(),
        );
        let decoded = decoder
            .decode(&nightcrier::ingest::Received::new(message))
            .await;
        assert_eq!(
            decoded.events.len(),
            1,
            "{}: {:?}",
            path.display(),
            decoded.rejected
        );
    }
}
