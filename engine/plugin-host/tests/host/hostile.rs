//! Hostile plugins: each attack is contained, reported as a typed error naming the plugin, and the host serves the next call.

use std::time::Duration;

use nightcrier_plugin_host::types::Severity;
use nightcrier_plugin_host::{CallError, PluginHost};

use crate::support::{agent_result, incident, load};

/// `[plugin.<id>]` settings for the hostile fixture copied to `<id>.wasm`: it names itself after
/// the file (its describe name comes from its config), then `toml` (settings, then a config table).
pub(crate) fn hostile_as(id: &str, toml: &str) -> String {
    let header = format!("[plugin.{id}.config]");
    let named = format!("{header}\nname = \"{id}\"");
    if toml.contains(&header) {
        format!("[plugin.{id}]\n{}\n", toml.replacen(&header, &named, 1))
    } else {
        format!("[plugin.{id}]\n{toml}\n{named}\n")
    }
}

/// Loads the hostile fixture as `attacker` (configured by `attacker_toml`), a benign copy, and redact-secrets.
async fn arena(attacker_toml: &str) -> (PluginHost, crate::support::Folder) {
    let config = format!(
        "{}{}",
        hostile_as("attacker", attacker_toml),
        hostile_as(
            "benign",
            "deadline_ms = 1000\n[plugin.benign.config]\nattack = \"none\""
        )
    );
    let (host, refused, folder, _kv) = load(
        &[
            ("fixtures/hostile.wasm", "attacker.wasm"),
            ("fixtures/hostile.wasm", "benign.wasm"),
            ("plugins/redact-secrets.wasm", "redact-secrets.wasm"),
        ],
        &config,
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    (host, folder)
}

async fn attack(host: &PluginHost) -> Result<nightcrier_plugin_host::types::Outcome, CallError> {
    host.post_triage(
        "attacker",
        &incident(Some("shop"), Severity::Critical),
        &agent_result("report"),
    )
    .await
}

/// After an attack the same host still runs other plugins, and the attacker's own next call is handled too.
async fn still_serves(host: &PluginHost) {
    let incident = incident(Some("shop"), Severity::Critical);
    let outcome = host
        .post_triage("benign", &incident, &agent_result("report"))
        .await
        .unwrap();
    assert_eq!(
        outcome.fields,
        vec![("behaved".to_owned(), "yes".to_owned())]
    );
    let outcome = host
        .post_triage("redact-secrets", &incident, &agent_result("password: x"))
        .await
        .unwrap();
    assert!(outcome.report_markdown.is_some());
}

#[tokio::test]
async fn an_endless_loop_is_stopped_within_twice_its_deadline() {
    let (host, _folder) =
        arena("deadline_ms = 200\n[plugin.attacker.config]\nattack = \"loop\"").await;
    for _ in 0..2 {
        let started = tokio::time::Instant::now();
        let error = attack(&host).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(
                error,
                CallError::Timeout {
                    deadline_ms: 200,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("attacker@0.1.0"), "{error}");
        assert!(
            elapsed < Duration::from_millis(400),
            "stopped after {elapsed:?}"
        );
        still_serves(&host).await;
    }
}

#[tokio::test]
async fn a_memory_bomb_is_refused_at_the_cap() {
    let (host, _folder) =
        arena("memory_mib = 16\n[plugin.attacker.config]\nattack = \"memory\"").await;
    let error = attack(&host).await.unwrap_err();
    assert!(
        matches!(error, CallError::MemoryLimit { limit_mib: 16, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("attacker@0.1.0 exceeded its memory cap of 16 MiB"),
        "{error}"
    );
    still_serves(&host).await;
}

#[tokio::test]
async fn a_panic_is_reported_with_its_message() {
    let (host, _folder) = arena("[plugin.attacker.config]\nattack = \"trap\"").await;
    let error = attack(&host).await.unwrap_err();
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("plugin attacker@0.1.0 trapped: unreachable"),
        "{message}"
    );
    assert!(
        message.contains("hostile plugin panics on purpose"),
        "the panic message is lost: {message}"
    );
    assert!(message.len() < 1200, "{message}");
    still_serves(&host).await;
}

/// Both stacks: wasm's own call stack (deep recursion) and the guest's stack in linear memory
/// (big frames), whose overflow wasmtime sees as an access below address 0.
#[tokio::test]
async fn a_stack_overflow_is_reported_as_one() {
    for attack_name in ["stackoverflow", "bigstack"] {
        let (host, _folder) = arena(&format!(
            "[plugin.attacker.config]\nattack = \"{attack_name}\""
        ))
        .await;
        let error = attack(&host).await.unwrap_err();
        assert!(matches!(error, CallError::Trap { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("plugin attacker@0.1.0 trapped: stack overflow"),
            "{attack_name}: {message}"
        );
        assert!(message.len() < 1200, "{message}");
        still_serves(&host).await;
    }
}

/// A fresh pooled instance per call starts from the module's initial memory: nothing a previous
/// call wrote (initialised data, zeroed data, heap) is visible, however the pool resets slots.
#[tokio::test]
async fn a_fresh_instance_sees_nothing_an_earlier_call_left() {
    let (host, _folder) = arena("[plugin.attacker.config]\nattack = \"snoop\"").await;
    let incident = incident(Some("shop"), Severity::Critical);
    for secret in [
        "first report: token=abc",
        "second report: token=def",
        "third",
    ] {
        let outcome = host
            .post_triage("attacker", &incident, &agent_result(secret))
            .await
            .unwrap();
        assert_eq!(
            outcome.fields,
            vec![
                ("calls".to_owned(), "8".to_owned()),
                ("previous".to_owned(), String::new()),
            ],
            "state leaked into a fresh instance"
        );
    }
    still_serves(&host).await;
}

/// Captures what the host logs on this thread (tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_log_flood_is_cut_to_the_per_call_budget_and_cannot_forge_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (host, _folder) =
        arena("deadline_ms = 5000\n[plugin.attacker.config]\nattack = \"logflood\"").await;
    for _ in 0..2 {
        let outcome = attack(&host).await.unwrap();
        assert_eq!(
            outcome.fields,
            vec![("logged".to_owned(), "10000".to_owned())]
        );
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let floods = text.lines().filter(|line| line.contains("flood ")).count();
    assert_eq!(
        floods,
        2 * nightcrier_plugin_host::LOG_LINES_PER_CALL as usize,
        "the budget is per call"
    );
    let summaries: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("over the per-call budget were dropped"))
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(summaries[0].contains("dropped=9900"), "{}", summaries[0]);
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00Z ERROR")),
        "a plugin forged a log line"
    );
    assert!(
        !text.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    still_serves(&host).await;
}

#[tokio::test]
async fn key_value_writes_are_bounded_per_call() {
    let (host, _folder) =
        arena("deadline_ms = 5000\n[plugin.attacker.config]\nattack = \"kvflood\"").await;
    for _ in 0..2 {
        let outcome = attack(&host).await.unwrap();
        let fields: std::collections::BTreeMap<_, _> = outcome.fields.into_iter().collect();
        assert_eq!(
            fields["stored"],
            nightcrier_plugin_host::KV_OPS_PER_CALL.to_string()
        );
        assert!(
            fields["refusal"].contains("key-value operations per call"),
            "{fields:?}"
        );
    }
    still_serves(&host).await;
}

/// Loads only the hostile fixture as `attacker`; returns its key-value store too.
async fn attacker_with_store(
    attacker_toml: &str,
) -> (
    PluginHost,
    crate::support::Folder,
    std::sync::Arc<nightcrier_plugin_host::MemoryKvStore>,
) {
    let (host, refused, folder, kv) = load(
        &[("fixtures/hostile.wasm", "attacker.wasm")],
        &hostile_as("attacker", attacker_toml),
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    (host, folder, kv)
}

/// A call's key-value writes are applied only when it succeeds: a timeout, a trap or a returned
/// error after writing 1 MiB leaves nothing, a success keeps all of it.
#[tokio::test]
async fn a_failed_call_leaves_the_key_value_store_as_it_was() {
    for (attack_name, failed) in [
        ("kvwrite-loop", "exceeded its deadline"),
        ("kvwrite-trap", "trapped: unreachable"),
        ("kvwrite-fail", "failing on purpose after writing: Ok(())"),
    ] {
        let (host, _folder, kv) = attacker_with_store(&format!(
            "deadline_ms = 300\n[plugin.attacker.config]\nattack = \"{attack_name}\""
        ))
        .await;
        let error = attack(&host).await.unwrap_err();
        assert!(error.to_string().contains(failed), "{attack_name}: {error}");
        assert!(kv.is_empty("attacker"), "{attack_name} left writes behind");
    }
    let (host, _folder, kv) =
        attacker_with_store("deadline_ms = 2000\n[plugin.attacker.config]\nattack = \"kvwrite\"")
            .await;
    attack(&host).await.unwrap();
    assert_eq!(kv.len("attacker"), 16);
}

#[tokio::test]
async fn a_call_reads_its_own_writes_before_they_are_applied() {
    let (host, _folder, kv) =
        attacker_with_store("[plugin.attacker.config]\nattack = \"kvreadback\"").await;
    let fields = |outcome: nightcrier_plugin_host::types::Outcome| -> Vec<String> {
        outcome
            .fields
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    };
    assert_eq!(
        fields(attack(&host).await.unwrap()),
        ["before=none", "written=yes", "deleted=none"]
    );
    assert_eq!(
        kv.len("attacker"),
        1,
        "`seen` stays, `gone` was deleted in the call"
    );
    assert_eq!(
        fields(attack(&host).await.unwrap()),
        ["before=yes", "written=yes", "deleted=none"]
    );
}

/// Runs one `kvflood` call of the hostile fixture (as `attacker`, with `settings`, writing keys
/// `<prefix>flood-<n>` with values of `value_bytes`) on `kv`; returns its `stored` and `refusal`.
async fn flood(
    kv: &std::sync::Arc<nightcrier_plugin_host::MemoryKvStore>,
    settings: &str,
    prefix: &str,
    value_bytes: usize,
) -> (String, String) {
    let folder = crate::support::folder(
        &[("fixtures/hostile.wasm", "attacker.wasm")],
        &hostile_as(
            "attacker",
            &format!(
                "deadline_ms = 5000\n{settings}\n[plugin.attacker.config]\nattack = \"kvflood\"\nprefix = \"{prefix}\"\ntarget = \"{value_bytes}\""
            ),
        ),
    );
    let (host, refused) = PluginHost::load(folder.config.clone(), kv.clone())
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let mut fields: std::collections::BTreeMap<String, String> =
        attack(&host).await.unwrap().fields.into_iter().collect();
    (
        fields.remove("stored").unwrap(),
        fields.remove("refusal").unwrap(),
    )
}

/// Per-call budgets bound the rate; the quota bounds the total, across calls, with the WIT
/// `invalid` error; overwriting keys that exist does not grow it.
#[tokio::test]
async fn the_key_value_quota_holds_across_calls() {
    let kv = std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new());
    let keys = "kv_max_keys = 300";
    let (stored, refusal) = flood(&kv, keys, "a-", 1).await;
    assert_eq!(stored, "256", "the per-call budget: {refusal}");
    assert!(refusal.contains("per call"), "{refusal}");
    let (stored, refusal) = flood(&kv, keys, "b-", 1).await;
    assert_eq!(stored, "44", "{refusal}");
    assert!(
        refusal.contains("Invalid(") && refusal.contains("quota of 300 keys"),
        "{refusal}"
    );
    assert_eq!(kv.len("attacker"), 300);
    let (stored, _) = flood(&kv, keys, "a-", 1).await;
    assert_eq!(stored, "256", "overwrites fit under a full quota");
    assert_eq!(kv.len("attacker"), 300);

    let kv = std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new());
    let bytes = "kv_max_mib = 1";
    let (stored, refusal) = flood(&kv, bytes, "a-", 30_000).await;
    assert_eq!(stored, "34", "the per-call budget: {refusal}");
    let (stored, refusal) = flood(&kv, bytes, "b-", 30_000).await;
    assert_eq!(stored, "0", "{refusal}");
    assert!(
        refusal.contains("Invalid(") && refusal.contains("quota of 1048576 value bytes"),
        "{refusal}"
    );
    assert_eq!(kv.len("attacker"), 34);
}

#[tokio::test]
async fn leaking_host_handles_is_stopped_at_the_resource_cap() {
    let cap = nightcrier_plugin_host::MAX_RESOURCES;
    let config = |count: usize| {
        format!(
            "deadline_ms = 5000\n[plugin.attacker.config]\nattack = \"handles\"\ntarget = \"{count}\""
        )
    };
    let (host, _folder) = arena(&config(cap / 2)).await;
    let outcome = attack(&host).await.unwrap();
    assert_eq!(
        outcome.fields,
        vec![("leaked".to_owned(), format!("{} handles", cap / 2))]
    );
    let (host, _folder) = arena(&config(cap * 2)).await;
    let error = attack(&host).await.unwrap_err();
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    still_serves(&host).await;
}

#[tokio::test]
async fn oversized_output_is_refused() {
    let (host, _folder) =
        arena("max_output_kib = 1024\n[plugin.attacker.config]\nattack = \"oversized\"").await;
    let error = attack(&host).await.unwrap_err();
    assert!(
        matches!(
            error,
            CallError::OutputTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{error}"
    );
    still_serves(&host).await;
}

#[tokio::test]
async fn files_are_denied_unless_a_read_only_dir_is_granted() {
    let (host, _folder) =
        arena("[plugin.attacker.config]\nattack = \"file\"\ntarget = \"/etc/hostname\"").await;
    let error = attack(&host).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Plugin { message, .. } if message.starts_with("denied")),
        "{error}"
    );
    still_serves(&host).await;

    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("notes.txt"), "visible").unwrap();
    let dir = granted.path().display().to_string();
    let toml = format!(
        "read_only_dirs = [{dir:?}]\n[plugin.attacker.config]\nattack = \"file\"\ntarget = {:?}",
        format!("{dir}/notes.txt")
    );
    let (host, _folder) = arena(&toml).await;
    let outcome = attack(&host).await.unwrap();
    assert_eq!(
        outcome.fields,
        vec![("leaked".to_owned(), "visible".to_owned())]
    );
}

#[tokio::test]
async fn env_vars_are_denied_unless_granted_by_name() {
    let (host, _folder) =
        arena("[plugin.attacker.config]\nattack = \"env\"\ntarget = \"PATH\"").await;
    let error = attack(&host).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Plugin { message, .. } if message.starts_with("denied")),
        "{error}"
    );
    still_serves(&host).await;

    let (host, _folder) =
        arena("env = [\"PATH\"]\n[plugin.attacker.config]\nattack = \"env\"\ntarget = \"PATH\"")
            .await;
    let outcome = attack(&host).await.unwrap();
    assert_eq!(
        outcome.fields,
        vec![("leaked".to_owned(), std::env::var("PATH").unwrap())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_to_a_non_granted_host_is_denied_before_connecting() {
    let server = crate::slack::Listener::start(200).await;
    let toml = format!(
        "allowed_hosts = [\"http://127.0.0.1:1\"]\n[plugin.attacker.config]\nattack = \"http\"\ntarget = \"{}\"",
        server.url("/steal")
    );
    let (host, _folder) = arena(&toml).await;
    let error = attack(&host).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Plugin { message, .. } if message.starts_with("denied") && message.contains("HttpRequestDenied")),
        "{error}"
    );
    assert_eq!(server.requests().len(), 0, "the host must not connect");
    still_serves(&host).await;
}

#[tokio::test]
async fn failure_policy_decides_whether_the_chain_continues() {
    let files = [
        ("fixtures/hostile.wasm", "attacker.wasm"),
        ("plugins/redact-secrets.wasm", "redact-secrets.wasm"),
    ];
    let attacker = hostile_as(
        "attacker",
        "order = -1\n[plugin.attacker.config]\nattack = \"trap\"",
    );
    let incident = incident(Some("shop"), Severity::Critical);
    let result = agent_result("token: abc123");

    let (host, refused, _folder, _kv) = load(&files, &attacker).await;
    assert!(refused.is_empty(), "{refused:?}");
    let verdict = host.run_post_triage(&incident, &result).await.unwrap();
    assert_eq!(verdict.failures.len(), 1);
    assert_eq!(verdict.failures[0].0, "attacker");
    assert_eq!(verdict.report_markdown, "token: [REDACTED]");

    let closed = format!("[stages.post_triage]\nfailure_policy = \"fail-closed\"\n{attacker}");
    let (host, refused, _folder, _kv) = load(&files, &closed).await;
    assert!(refused.is_empty(), "{refused:?}");
    let error = host.run_post_triage(&incident, &result).await.unwrap_err();
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
}
