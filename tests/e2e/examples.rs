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

#[test]
fn example_events_are_valid_faults() {
    for entry in std::fs::read_dir(examples().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let payload: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        nightcrier::event::parse_fault("kubernetes-mcp", None, &payload, chrono::Utc::now())
            .unwrap_or_else(|reason| panic!("{}: {reason}", path.display()));
    }
}
