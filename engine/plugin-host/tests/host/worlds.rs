//! Happy paths of each world with the example plugins, including the key-value store and the stage chains.

use nightcrier_plugin_host::types::{Decision, Envelope, Feed, FeedKind, Severity};
use nightcrier_plugin_host::{PreTriageVerdict, World};

use crate::support::{CRASH_LOOP, agent_result, incident, load};

fn mcp_envelope(body: &str, logger: &str) -> Envelope {
    Envelope {
        kind: FeedKind::Mcp,
        cluster: Some("kind-dev".to_owned()),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
        logger: Some(logger.to_owned()),
        received_at_ms: 1_766_239_651_000,
    }
}

#[tokio::test]
async fn kubernetes_mcp_declares_its_feed_and_decodes_faults() {
    let (host, refused, _folder, _kv) = load(
        &[("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm")],
        "",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("kubernetes-mcp").unwrap();
    assert_eq!(summary.world, World::Source);
    assert_eq!(summary.wit_version, "0.1.2");
    let Some(Feed::Mcp(feed)) = summary.feed else {
        panic!("expected an MCP feed, got {:?}", summary.feed)
    };
    assert_eq!(
        (
            feed.tool.as_str(),
            feed.arguments.as_str(),
            feed.logger.as_str()
        ),
        (
            "events_subscribe",
            r#"{"mode":"faults"}"#,
            "kubernetes/faults"
        )
    );

    let events = host
        .decode(
            "kubernetes-mcp",
            &mcp_envelope(CRASH_LOOP, "kubernetes/faults"),
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.fault_id, "a817ebcffcb2cf13");
    assert_eq!(event.fault_type, "CrashLoop");
    assert_eq!(event.severity, Severity::Critical);
    assert_eq!(event.resource.namespace.as_deref(), Some("shop"));

    let error = host
        .decode(
            "kubernetes-mcp",
            &mcp_envelope(CRASH_LOOP, "kubernetes/events"),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("kubernetes-mcp@0.1.0")
            && error.to_string().contains("unsupported"),
        "{error}"
    );
    let error = host
        .decode(
            "kubernetes-mcp",
            &mcp_envelope("{not json", "kubernetes/faults"),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("malformed"), "{error}");
}

#[tokio::test]
async fn alertmanager_yields_one_event_per_firing_alert() {
    let (host, refused, _folder, _kv) =
        load(&[("plugins/alertmanager.wasm", "alertmanager.wasm")], "").await;
    assert!(refused.is_empty(), "{refused:?}");
    let body = r#"{"version":"4","status":"firing","alerts":[
      {"status":"firing","labels":{"alertname":"KubePodCrashLooping","severity":"critical","namespace":"shop","pod":"api-1"},"annotations":{"description":"api-1 restarts"},"startsAt":"2025-12-20T14:07:31Z","fingerprint":"f1"},
      {"status":"firing","labels":{"alertname":"KubeNodeNotReady","severity":"warning","node":"n1"},"annotations":{"summary":"n1 not ready"},"startsAt":"2025-12-20T14:08:00Z","fingerprint":"f2"},
      {"status":"resolved","labels":{"alertname":"Gone"},"annotations":{},"startsAt":"","fingerprint":"f3"}]}"#;
    let envelope = Envelope {
        kind: FeedKind::Webhook,
        cluster: Some("prod".to_owned()),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.as_bytes().to_vec(),
        logger: None,
        received_at_ms: 0,
    };
    let events = host.decode("alertmanager", &envelope).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].resource.kind.as_str(), events[0].severity),
        ("Pod", Severity::Critical)
    );
    assert_eq!(
        (
            events[1].resource.kind.as_str(),
            events[1].resource.namespace.as_deref()
        ),
        ("Node", None)
    );
    assert!(events.iter().all(|event| event.cluster == "prod"));
}

#[tokio::test]
async fn noise_filter_skips_by_its_rules() {
    let config = r#"
        [plugin.noise-filter.config]
        min_severity = "warning"
        rules = [{ namespaces = ["kube-*"] }]
    "#;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/noise-filter.wasm", "noise-filter.wasm")],
        config,
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let decision = host
        .pre_triage(
            "noise-filter",
            &incident(Some("kube-system"), Severity::Critical),
        )
        .await
        .unwrap();
    assert_eq!(decision, Decision::Skip("matched noise rule 0".to_owned()));
    let decision = host
        .pre_triage("noise-filter", &incident(Some("shop"), Severity::Info))
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Skip(reason) if reason.contains("below")));
    let decision = host
        .pre_triage("noise-filter", &incident(Some("shop"), Severity::Critical))
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Proceed(_)));
}

#[tokio::test]
async fn dedup_notifies_once_per_window_using_the_kv_store() {
    let (host, refused, _folder, kv) = load(
        &[("plugins/dedup.wasm", "dedup.wasm")],
        "[plugin.dedup.config]\nwindow_seconds = 600\n",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let first = incident(Some("shop"), Severity::Critical);
    assert!(matches!(
        host.pre_triage("dedup", &first).await.unwrap(),
        Decision::Proceed(_)
    ));
    assert_eq!(kv.len("dedup"), 1);
    let repeat = host.pre_triage("dedup", &first).await.unwrap();
    assert!(
        matches!(&repeat, Decision::Skip(reason) if reason.contains("duplicate")),
        "{repeat:?}"
    );
    let mut other = first.clone();
    other.event.fault_id = "ec21b7fdcf5f6087".to_owned();
    assert!(matches!(
        host.pre_triage("dedup", &other).await.unwrap(),
        Decision::Proceed(_)
    ));
}

#[tokio::test]
async fn redact_secrets_masks_the_report() {
    let (host, refused, _folder, _kv) = load(
        &[("plugins/redact-secrets.wasm", "redact-secrets.wasm")],
        "",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let report = "## Root Cause\npassword: hunter2\nAuthorization: Bearer abcdefghijklmnop\n";
    let outcome = host
        .post_triage(
            "redact-secrets",
            &incident(Some("shop"), Severity::Critical),
            &agent_result(report),
        )
        .await
        .unwrap();
    let redacted = outcome.report_markdown.unwrap();
    assert!(
        !redacted.contains("hunter2") && !redacted.contains("abcdefghijklmnop"),
        "{redacted}"
    );
    assert!(
        outcome
            .fields
            .contains(&("redactions".to_owned(), "2".to_owned())),
        "{:?}",
        outcome.fields
    );
}

#[tokio::test]
async fn python_team_router_patches_the_incident() {
    let config = "[plugin.team-router.config]\nteams = { shop = \"payments\" }\n";
    let (host, refused, _folder, _kv) =
        load(&[("plugins/team-router.wasm", "team-router.wasm")], config).await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("team-router").unwrap();
    assert!(
        summary.reuses_instances,
        "a Python guest must reuse instances"
    );
    for _ in 0..3 {
        let decision = host
            .pre_triage("team-router", &incident(Some("shop"), Severity::Critical))
            .await
            .unwrap();
        let Decision::Proceed(patch) = decision else {
            panic!("expected proceed, got {decision:?}")
        };
        assert_eq!(
            patch.labels,
            vec![("team".to_owned(), "payments".to_owned())]
        );
        assert_eq!(patch.priority, Some(200));
    }
}

/// The C example (wit-bindgen c, clang and wasi-libc, wasm-tools with the WASI adapter): its
/// config comes through `get-config`, the hour through `now-ms`.
#[tokio::test]
async fn c_maintenance_window_skips_listed_namespaces_while_open() {
    let always = "[plugin.maintenance-window.config]\nnamespaces = [\"batch\", \"shop\"]\nstart_hour = 0\nend_hour = 24\n";
    let (host, refused, _folder, _kv) = load(
        &[("plugins/maintenance-window.wasm", "maintenance-window.wasm")],
        always,
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("maintenance-window").unwrap();
    assert_eq!(
        (
            summary.world,
            summary.version.as_str(),
            summary.wit_version.as_str()
        ),
        (World::PreTriage, "0.1.0", "0.1.2")
    );
    let decision = host
        .pre_triage(
            "maintenance-window",
            &incident(Some("shop"), Severity::Critical),
        )
        .await
        .unwrap();
    assert_eq!(
        decision,
        Decision::Skip("maintenance window 00:00-24:00 UTC for namespace shop".to_owned())
    );
    for namespace in [Some("payments"), None] {
        let decision = host
            .pre_triage(
                "maintenance-window",
                &incident(namespace, Severity::Critical),
            )
            .await
            .unwrap();
        let Decision::Proceed(patch) = decision else {
            panic!("expected proceed for {namespace:?}, got {decision:?}")
        };
        assert!(
            patch.labels.is_empty() && patch.priority.is_none() && patch.context_files.is_empty(),
            "{patch:?}"
        );
    }

    // a window whose start is its end is never open
    let never = "[plugin.maintenance-window.config]\nnamespaces = [\"shop\"]\nstart_hour = 5\nend_hour = 5\n";
    let (host, _refused, _folder, _kv) = load(
        &[("plugins/maintenance-window.wasm", "maintenance-window.wasm")],
        never,
    )
    .await;
    let decision = host
        .pre_triage(
            "maintenance-window",
            &incident(Some("shop"), Severity::Critical),
        )
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Proceed(_)), "{decision:?}");

    let broken = "[plugin.maintenance-window.config]\nnamespaces = \"shop\"\n";
    let (host, _refused, _folder, _kv) = load(
        &[("plugins/maintenance-window.wasm", "maintenance-window.wasm")],
        broken,
    )
    .await;
    let error = host
        .pre_triage(
            "maintenance-window",
            &incident(Some("shop"), Severity::Critical),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("invalid maintenance-window config: malformed JSON"),
        "{error}"
    );
}

#[tokio::test]
async fn pre_triage_chain_applies_patches_in_order_and_stops_at_skip() {
    let config = r#"
        [plugin.team-router]
        order = 1
        [plugin.team-router.config]
        teams = { shop = "payments" }
        [plugin.dedup]
        order = 2
    "#;
    let (host, refused, _folder, _kv) = load(
        &[
            ("plugins/team-router.wasm", "team-router.wasm"),
            ("plugins/dedup.wasm", "dedup.wasm"),
        ],
        config,
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        host.chain(World::PreTriage),
        vec!["team-router".to_owned(), "dedup".to_owned()]
    );
    let verdict = host
        .run_pre_triage(&incident(Some("shop"), Severity::Critical))
        .await
        .unwrap();
    let PreTriageVerdict::Proceed {
        incident, failures, ..
    } = verdict
    else {
        panic!("expected proceed, got {verdict:?}")
    };
    assert!(failures.is_empty());
    assert!(
        incident
            .labels
            .contains(&("team".to_owned(), "payments".to_owned()))
    );
    assert_eq!(incident.priority, 200);
    assert!(
        incident
            .annotations
            .iter()
            .any(|(key, _)| key == "dedup.nightcrier.io/key")
    );
    let verdict = host.run_pre_triage(&incident).await.unwrap();
    assert!(
        matches!(verdict, PreTriageVerdict::Skip { ref plugin, .. } if plugin == "dedup"),
        "{verdict:?}"
    );
}
