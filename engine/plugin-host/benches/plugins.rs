//! Plugin-host benchmarks: kubernetes-mcp decode (warm and fresh pooled instance, and native Rust), the Python
//! example's per-call time, and loading 10 plugins from the precompiled cache.
//!
//! Run: `cargo bench -p nightcrier-plugin-host --bench plugins`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nightcrier_plugin_host::types::{Envelope, FeedKind, Severity};
use nightcrier_plugin_host::{MemoryKvStore, PluginHost};

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/host/support.rs"]
mod support;

/// The kubernetes-mcp plugin's decode compiled natively (the same crate the wasm plugin is built
/// from), for the ratio.
mod native {
    use super::*;

    pub(crate) fn decode(envelope: &Envelope) -> Result<usize, String> {
        kubernetes_mcp::decode_notification(&envelope.body, envelope.cluster.as_deref())
            .map(|event| event.fault_id.len())
            .map_err(|error| format!("{error:?}"))
    }
}

/// The §4.4 CrashLoop example with a termination message, as the server sends it: about 1 KB.
fn notification_1kb() -> String {
    let termination = "panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x6f3a2b] goroutine 1 [running]: main.(*Server).handleCheckout(0xc0001a2000, {0x7f8e2c, 0xc0002b4000}) /app/server.go:214 +0x4b main.main() /app/main.go:58 +0x1e5 created by net/http.(*Server).Serve in goroutine 1 /usr/local/go/src/net/http/server.go:3285 +0x4b4";
    let notification = support::CRASH_LOOP.replace(
        "last reason: Error",
        &format!("last reason: Error, termination message: {termination}"),
    );
    assert!(
        (950..=1100).contains(&notification.len()),
        "notification is {} bytes",
        notification.len()
    );
    notification
}

fn envelope() -> Envelope {
    Envelope {
        kind: FeedKind::Mcp,
        cluster: Some("kind-dev".to_owned()),
        headers: Vec::new(),
        body: notification_1kb().into_bytes(),
        logger: Some("kubernetes/faults".to_owned()),
        received_at_ms: 0,
    }
}

fn benches(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let envelope = envelope();
    assert!(
        envelope.body.len() > 500,
        "the sample notification should be about 1 KB"
    );

    // one host per instance policy: a file name is a plugin's identity, so one folder holds
    // kubernetes-mcp once
    let (host, refused, _folder, _kv) = runtime.block_on(support::load(
        &[
            ("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm"),
            ("plugins/team-router.wasm", "team-router.wasm"),
        ],
        "[plugin.kubernetes-mcp]\nreuse_instances = true\n[plugin.team-router.config]\nteams = { shop = \"payments\" }\n",
    ));
    assert!(refused.is_empty(), "{refused:?}");
    let (fresh_host, refused, _fresh_folder, _kv) = runtime.block_on(support::load(
        &[("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm")],
        "[plugin.kubernetes-mcp]\nreuse_instances = false\n",
    ));
    assert!(refused.is_empty(), "{refused:?}");

    let mut group = criterion.benchmark_group("kubernetes-mcp decode (1 KB notification)");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("warm instance", |bencher| {
        bencher
            .to_async(&runtime)
            .iter(|| async { host.decode("kubernetes-mcp", &envelope).await.unwrap() })
    });
    group.bench_function("fresh pooled instance", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            fresh_host
                .decode("kubernetes-mcp", &envelope)
                .await
                .unwrap()
        })
    });
    group.bench_function("native rust", |bencher| {
        bencher.iter(|| native::decode(&envelope).unwrap())
    });
    group.finish();

    let incident = support::incident(Some("shop"), Severity::Critical);
    let mut group = criterion.benchmark_group("python team-router pre-triage");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("warm instance", |bencher| {
        bencher
            .to_async(&runtime)
            .iter(|| async { host.pre_triage("team-router", &incident).await.unwrap() })
    });
    group.finish();

    // Ten plugins, all already in the precompiled cache (the first load above and this warm-up fill it).
    let ten = [
        ("plugins/kubernetes-mcp.wasm", "kubernetes-mcp.wasm"),
        ("plugins/alertmanager.wasm", "alertmanager.wasm"),
        ("plugins/noise-filter.wasm", "noise-filter.wasm"),
        ("plugins/dedup.wasm", "dedup.wasm"),
        ("plugins/redact-secrets.wasm", "redact-secrets.wasm"),
        ("plugins/slack.wasm", "slack.wasm"),
        ("plugins/team-router.wasm", "team-router.wasm"),
        ("fixtures/hostile.wasm", "hostile.wasm"),
        ("fixtures/hostile.wasm", "hostile-2.wasm"),
        ("fixtures/hostile.wasm", "hostile-3.wasm"),
    ];
    let folder = support::folder(
        &ten,
        "[plugin.slack]\nallowed_hosts = [\"https://hooks.slack.com:443\"]\n[plugin.slack.config]\nwebhook_url = \"https://hooks.slack.com/x\"\n[plugin.hostile-2.config]\nname = \"hostile-2\"\n[plugin.hostile-3.config]\nname = \"hostile-3\"\n",
    );
    let (warm, refused) = runtime
        .block_on(PluginHost::load(
            folder.config.clone(),
            Arc::new(MemoryKvStore::new()),
        ))
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(warm.plugins().len(), 10);
    drop(warm);
    let mut group = criterion.benchmark_group("load");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("10 plugins from the precompiled cache", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            let (host, refused) =
                PluginHost::load(folder.config.clone(), Arc::new(MemoryKvStore::new()))
                    .await
                    .unwrap();
            assert!(refused.is_empty());
            host
        })
    });
    group.finish();
}

criterion_group!(plugin_benches, benches);
criterion_main!(plugin_benches);
