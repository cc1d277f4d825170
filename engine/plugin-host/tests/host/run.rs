//! `plugins run`: one call per world on the sample inputs of `examples/plugin-inputs/`, with logs,
//! key-value writes and timing; a trap or a limit is a failed report with the reason.

use std::path::{Path, PathBuf};

use nightcrier_plugin_host::{KvChange, PluginsConfig, RunOptions, RunReport, World, run_plugin};

use crate::support::{artefact, plugins_source, shared_cache};

fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugin-inputs")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn config_for(file: &Path, toml: &str) -> PluginsConfig {
    PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n{toml}",
        file.parent().unwrap(),
        shared_cache()
    ))
    .unwrap()
}

async fn run(
    file: PathBuf,
    input: String,
    plugin_config: Option<&str>,
    kv: Option<String>,
    toml: &str,
) -> RunReport {
    let config = config_for(&file, toml);
    run_plugin(&RunOptions {
        path: file,
        input,
        plugin_config: plugin_config.map(str::to_owned),
        kv,
        config,
    })
    .await
}

#[tokio::test]
async fn runs_a_source_on_a_sample_envelope() {
    let report = run(
        artefact("plugins/kubernetes-mcp.wasm"),
        sample("source-mcp.json"),
        None,
        None,
        "",
    )
    .await;
    assert!(report.succeeded(), "{}", report.to_json());
    assert_eq!(report.world, Some(World::Source));
    assert_eq!(report.plugin, "kubernetes-mcp@0.1.0");
    let result = report.result.as_ref().unwrap();
    assert_eq!(result[0]["fault_id"], "a817ebcffcb2cf13", "{result}");
    assert_eq!(result[0]["resource"]["namespace"], "shop", "{result}");
    assert!(report.duration_ms > 0.0, "{}", report.to_json());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["result"][0]["fault_type"], "CrashLoop");
}

#[tokio::test]
async fn runs_a_pre_triage_plugin_with_config_kv_and_logs() {
    // the frozen 0.1.0 fixture logs, reads its config and counts calls in its store
    let file = plugins_source().join("contract-0.1.0/frozen-pre-triage.wasm");
    let report = run(
        file,
        sample("pre-triage.json"),
        Some(r#"{"window":"night"}"#),
        Some(r#"{"calls":"41"}"#.to_owned()),
        "",
    )
    .await;
    assert!(report.succeeded(), "{}", report.to_json());
    assert_eq!(report.world, Some(World::PreTriage));
    let result = report.result.as_ref().unwrap();
    assert_eq!(
        result["Proceed"]["labels"][0],
        serde_json::json!(["frozen-config", "{\"window\":\"night\"}"]),
        "{result}"
    );
    assert_eq!(result["Proceed"]["priority"], 1, "{result}");
    assert_eq!(report.logs.len(), 1, "{:?}", report.logs);
    assert_eq!(
        (report.logs[0].level, report.logs[0].message.as_str()),
        ("info", "pre-triage")
    );
    assert_eq!(
        report.logs[0].fields,
        [("calls".to_owned(), "42".to_owned())]
    );
    assert_eq!(
        report.kv_writes,
        [KvChange::Set {
            key: "calls".to_owned(),
            value: "42".to_owned(),
            ttl_seconds: None
        }]
    );

    // dedup skips what its store says it saw a moment ago
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let report = run(
        artefact("plugins/dedup.wasm"),
        sample("pre-triage.json"),
        None,
        Some(format!(
            r#"{{"fault:kind-dev:a817ebcffcb2cf13":"{now_ms}"}}"#
        )),
        "",
    )
    .await;
    assert!(report.succeeded(), "{}", report.to_json());
    let skip = report.result.as_ref().unwrap()["Skip"].as_str().unwrap();
    assert!(
        skip.starts_with("duplicate of fault:kind-dev:a817ebcffcb2cf13"),
        "{skip}"
    );
    assert!(report.kv_writes.is_empty(), "{:?}", report.kv_writes);
}

#[tokio::test]
async fn runs_a_post_triage_plugin_on_an_incident_and_agent_result() {
    let report = run(
        artefact("plugins/redact-secrets.wasm"),
        sample("post-triage.json"),
        None,
        None,
        "",
    )
    .await;
    assert!(report.succeeded(), "{}", report.to_json());
    assert_eq!(report.world, Some(World::PostTriage));
    let report_markdown = report.result.as_ref().unwrap()["report_markdown"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        report_markdown.starts_with("# Triage: checkout CrashLoop")
            && !report_markdown.contains("sk-test-1234567890abcdef"),
        "{report_markdown}"
    );
}

#[tokio::test]
async fn a_trap_or_a_limit_fails_the_run_with_the_reason_and_applies_no_writes() {
    let hostile = crate::support::folder(&[("fixtures/hostile.wasm", "hostile.wasm")], "");
    let file = hostile.dir.path().join("hostile.wasm");
    let report = run(
        file.clone(),
        sample("post-triage.json"),
        Some(r#"{"attack":"kvwrite-trap"}"#),
        None,
        "",
    )
    .await;
    assert!(!report.succeeded());
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with("plugin hostile@0.1.0 trapped") && error.contains("panics on purpose"),
        "{error}"
    );
    assert!(
        report.result.is_none() && report.kv_writes.is_empty(),
        "{}",
        report.to_json()
    );

    // the operator's limits apply, as in serve
    let report = run(
        file,
        sample("post-triage.json"),
        Some(r#"{"attack":"loop"}"#),
        None,
        "[plugin.hostile]\ndeadline_ms = 50\n",
    )
    .await;
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("50 ms"), "{error}");

    // an input of another world is refused with where to find samples
    let report = run(
        artefact("plugins/dedup.wasm"),
        sample("source-mcp.json"),
        None,
        None,
        "",
    )
    .await;
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains("not an incident for a pre-triage plugin")
            && error.contains("examples/plugin-inputs"),
        "{error}"
    );
}
