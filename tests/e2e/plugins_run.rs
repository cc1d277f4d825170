//! `nightcrier plugins run` as a process: one call per world on the sample inputs of
//! `examples/plugin-inputs/` prints the result as JSON and exits 0; a trap exits non-zero with the
//! reason on stderr.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::built_plugins;

fn nightcrier(cwd: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nightcrier-under-test"))
        .args(args)
        .current_dir(cwd)
        .env_remove("NIGHTCRIER_CONFIG")
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .env_remove("NIGHTCRIER_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugin-inputs")
        .join(name)
}

/// A copy of a built plugin in `dir`, so the precompiled cache lands there.
fn copy(dir: &Path, relative: &str, name: &str) -> String {
    let file = dir.join(name);
    std::fs::copy(built_plugins().join(relative), &file).unwrap();
    file.to_string_lossy().into_owned()
}

#[test]
fn plugins_run_calls_each_world_once_and_fails_loudly_on_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    for (plugin, input, world) in [
        ("kubernetes-mcp", "source-mcp.json", "source"),
        ("dedup", "pre-triage.json", "pre-triage"),
        ("redact-secrets", "post-triage.json", "post-triage"),
    ] {
        let file = copy(
            dir.path(),
            &format!("{plugin}.wasm"),
            &format!("{plugin}.wasm"),
        );
        let input = sample(input);
        let out = nightcrier(
            dir.path(),
            &["plugins", "run", &file, "--input", input.to_str().unwrap()],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{plugin}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["world"], world, "{stdout}");
        assert!(
            !report["result"].is_null() && report["error"].is_null(),
            "{stdout}"
        );
        assert!(report["duration_ms"].as_f64().unwrap() > 0.0, "{stdout}");
    }
    let dedup = sample("pre-triage.json");
    let kv = sample("kv.json");
    let out = nightcrier(
        dir.path(),
        &[
            "plugins",
            "run",
            &copy(dir.path(), "dedup.wasm", "dedup.wasm"),
            "--input",
            dedup.to_str().unwrap(),
            "--kv",
            kv.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["kv_writes"][0]["key"], "fault:kind-dev:a817ebcffcb2cf13",
        "{report}"
    );

    let hostile = copy(dir.path(), "../fixtures/hostile.wasm", "hostile.wasm");
    let input = sample("post-triage.json");
    let out = nightcrier(
        dir.path(),
        &[
            "plugins",
            "run",
            &hostile,
            "--input",
            input.to_str().unwrap(),
            "--plugin-config",
            r#"{"attack":"trap"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: plugin hostile@0.1.0 trapped"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("panics on purpose"),
        "{report}"
    );
}
