//! Several `serve` replicas on one Postgres sharing a fleet of fake kubernetes-mcp-servers: each
//! cluster's subscription held by exactly one replica at every sampled instant, taken over when
//! its replica dies, handed over in a rolling restart with every fault stored once, and stopped
//! by a replica cut off from the database before anyone else takes it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};

use crate::support::built_plugins;
use crate::support::fake_kms::FakeKms;
use crate::support::postgres_server::OwnPostgres;
use crate::support::process::{Serve, free_port, get_json};
use crate::support::proxy::Proxy;

const CLUSTERS: usize = 30;

struct Replica {
    config: PathBuf,
    listen: String,
}

/// A replica's config: its own data folder and listener, the shared database and fleet.
fn replica(dir: &Path, name: &str, url: &str, kms: &FakeKms, extra: &str) -> Replica {
    let home = dir.join(name);
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        built_plugins().join("kubernetes-mcp.wasm"),
        plugins.join("kubernetes-mcp.wasm"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut text = format!(
        r#"
data_dir = "{data}"
[database]
url = "{url}"
[workers]
concurrency = 0
[http]
listen = "{listen}"
[replica]
heartbeat = "1s"
ttl = "4s"
lease = "6s"
stop_margin = "2s"
[intake.mcp]
stop_timeout = "1s"
probe_interval = "2s"
request_timeout = "3s"
backoff_initial = "200ms"
backoff_max = "2s"
[plugins]
dir = "{plugins}"
{extra}
"#,
        data = home.join("data").display(),
        plugins = plugins.display(),
    );
    for index in 0..kms.listeners.len() {
        text.push_str(&format!(
            "\n[[clusters]]\nname = \"c{index:02}\"\nmcp.url = \"{}\"\n",
            kms.url(index)
        ));
    }
    let config = home.join("nightcrier.toml");
    std::fs::write(&config, text).unwrap();
    Replica { config, listen }
}

/// A proxy to `pg` the test can cut, and the database URL through it.
async fn cuttable(pg: &OwnPostgres) -> (Proxy, String) {
    let target: std::net::SocketAddr = {
        let rest = pg.url.split('@').nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    };
    let proxy = Proxy::start(target).await;
    let proxied = pg
        .url
        .replace(&target.to_string(), &proxy.address.to_string());
    (proxy, proxied)
}

fn fleet() -> FakeKms {
    let listeners: Vec<(u16, String)> = (0..CLUSTERS)
        .map(|i| (free_port(), format!("ctx-{i:02}")))
        .collect();
    let borrowed: Vec<(u16, &str)> = listeners
        .iter()
        .map(|(port, cluster)| (*port, cluster.as_str()))
        .collect();
    FakeKms::start(&borrowed)
}

/// Attached streams per listener (one per live subscriber: a dead process's stream is gone).
async fn attached(kms: &FakeKms) -> Vec<u64> {
    let mut counts = Vec::with_capacity(kms.listeners.len());
    for index in 0..kms.listeners.len() {
        counts.push(
            kms.state(index).await["attachedStreams"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    counts
}

/// A replica's `/metrics` text.
async fn metrics_of(replica: &Replica) -> String {
    reqwest::get(format!("http://{}/metrics", replica.listen))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Feeds a replica runs itself.
async fn active_feeds(replica: &Replica) -> usize {
    get_json(&replica.listen, "/api/v1/clusters")
        .await
        .and_then(|view| view["feeds"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|feed| feed["phase"] == "active")
        .count()
}

async fn every_cluster_held_once(kms: &FakeKms) -> bool {
    attached(kms).await.iter().all(|&n| n == 1)
}

/// What the replicas under `dir` logged about their feeds and leases, for a failure message.
fn feed_logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(homes) = std::fs::read_dir(dir) else {
        return out;
    };
    for home in homes.flatten() {
        let Ok(files) = std::fs::read_dir(home.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| {
                    line.contains("feed") || line.contains("WARN") || line.contains("ERROR")
                })
                .collect();
            out.push_str(&format!("\n--- {} ---\n", path.display()));
            for line in &lines[lines.len().saturating_sub(80)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Samples the fleet until `until` is true, failing if any cluster ever has two subscribers
/// (with the replicas' feed logs under `dir` in the message).
async fn sample_never_twice<F, Fut>(kms: &FakeKms, dir: &Path, limit: Duration, mut until: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let counts = attached(kms).await;
        assert!(
            counts.iter().all(|&n| n <= 1),
            "a cluster had two subscribers at once: {counts:?}{}",
            feed_logs(dir)
        );
        if until().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {counts:?}{}",
            feed_logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Every replica has joined and every view of the replica set agrees: each cluster held once,
/// spread as rendezvous hashing spreads it (about ten each), not a replica still holding what it
/// took before the last one joined.
async fn settled(kms: &FakeKms, replicas: &[&Replica]) -> bool {
    if !every_cluster_held_once(kms).await {
        return false;
    }
    let mut total = 0;
    for replica in replicas {
        let held = active_feeds(replica).await;
        if !(3..=17).contains(&held) {
            return false;
        }
        total += held;
    }
    total == CLUSTERS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_each_cluster_once_and_take_over_from_a_dead_one() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = fleet();
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|name| replica(dir.path(), name, &pg.url, &kms, ""))
        .collect();
    let mut processes: Vec<Option<Serve>> = replicas
        .iter()
        .map(|r| Some(Serve::start(&r.config)))
        .collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    sample_never_twice(&kms, dir.path(), Duration::from_secs(90), || {
        settled(&kms, &all)
    })
    .await;
    // keep sampling a while: no flapping, still one each
    let steady = tokio::time::Instant::now() + Duration::from_secs(6);
    sample_never_twice(&kms, dir.path(), Duration::from_secs(10), || async {
        tokio::time::Instant::now() > steady
    })
    .await;
    let mut spread = Vec::new();
    for replica in &replicas {
        spread.push(active_feeds(replica).await);
    }
    assert_eq!(
        spread.iter().sum::<usize>(),
        CLUSTERS,
        "after settling: {spread:?}"
    );
    assert!(
        spread.iter().all(|held| (3..=17).contains(held)),
        "after settling: {spread:?}"
    );

    // kill -9 of one replica: its clusters come back on the others within lease + backoff
    let victim_held = active_feeds(&replicas[0]).await;
    let killed = tokio::time::Instant::now();
    processes[0].take().unwrap().kill();
    sample_never_twice(&kms, dir.path(), Duration::from_secs(60), || async {
        every_cluster_held_once(&kms).await
            && active_feeds(&replicas[1]).await + active_feeds(&replicas[2]).await == CLUSTERS
    })
    .await;
    let took = killed.elapsed();
    // lease 6 s after the last renewal, a heartbeat to notice, a backoff step and a handshake
    assert!(
        took < Duration::from_secs(15),
        "{victim_held} clusters taken over after {took:?}"
    );
    // the dead replica's leases are now the others'
    let db = Database::connect(&pg.url).await.unwrap();
    let owners: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT DISTINCT owner FROM feed_leases WHERE owner IS NOT NULL",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert_eq!(owners.len(), 2, "{owners:?}");
    for process in processes.iter_mut() {
        if let Some(serve) = process.take() {
            serve.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_while_faults_flow_stores_every_fault_once() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = fleet();
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|name| replica(dir.path(), name, &pg.url, &kms, ""))
        .collect();
    let mut processes: Vec<Option<Serve>> = replicas
        .iter()
        .map(|r| Some(Serve::start(&r.config)))
        .collect();
    sample_never_twice(&kms, dir.path(), Duration::from_secs(90), || {
        every_cluster_held_once(&kms)
    })
    .await;
    // faults at 5/s on every cluster for ~45 s while each replica restarts in turn
    let emitting = async {
        let mut sent = 0usize;
        let bursts = (0..CLUSTERS).map(|index| kms.emit(index, 220, 5.0));
        for ids in futures::future::join_all(bursts).await {
            sent += ids.len();
        }
        sent
    };
    let restarting = async {
        for (index, replica) in replicas.iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(8)).await;
            // a replica's data folder is locked while it runs: stop, then start again
            if let Some(old) = processes[index].take() {
                old.stop();
            }
            processes[index] = Some(Serve::start(&replica.config));
        }
    };
    let (sent, ()) = tokio::join!(emitting, restarting);
    assert!(sent > 4000, "only {sent} faults reached a subscriber");
    let mut expected: HashSet<String> = HashSet::new();
    for index in 0..CLUSTERS {
        expected.extend(kms.sent(index).await);
    }
    assert_eq!(expected.len(), sent);
    let db = Database::connect(&pg.url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM fault_events",
            ))
            .await
            .unwrap()
            .unwrap();
        if row.try_get_by_index::<i64>(0).unwrap() as usize >= sent
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stored: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT fault_id FROM fault_events",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    let unique: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(unique.len(), stored.len(), "a fault was stored twice");
    let missing: Vec<&String> = expected.difference(&unique).take(5).collect();
    let extra: Vec<&String> = unique.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "sent {}, stored {}; missing e.g. {missing:?}, extra e.g. {extra:?}",
        expected.len(),
        unique.len()
    );
    for serve in processes.into_iter().flatten() {
        serve.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_the_database_stops_its_feeds_before_another_takes_them() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = fleet();
    // replica a reaches Postgres through a proxy the test can cut
    let (proxy, proxied) = cuttable(&pg).await;
    let a = replica(dir.path(), "a", &proxied, &kms, "");
    let b = replica(dir.path(), "b", &pg.url, &kms, "");
    let c = replica(dir.path(), "c", &pg.url, &kms, "");
    let serve_a = Serve::start(&a.config);
    let serve_b = Serve::start(&b.config);
    let serve_c = Serve::start(&c.config);
    // all three have joined and share the fleet before the cut: a replica cut while it was
    // the only one it had seen keeps its feeds through the outage (see docs/scaling.md)
    let all = [&a, &b, &c];
    sample_never_twice(&kms, dir.path(), Duration::from_secs(90), || {
        settled(&kms, &all)
    })
    .await;
    let held_by_a = active_feeds(&a).await;
    proxy.cut();
    // a cannot renew: it must let go (stop_margin before expiry), then b and c take over;
    // at no sampled instant does a cluster have two subscribers
    sample_never_twice(&kms, dir.path(), Duration::from_secs(60), || async {
        every_cluster_held_once(&kms).await
            && active_feeds(&b).await + active_feeds(&c).await == CLUSTERS
    })
    .await;
    assert_eq!(
        active_feeds(&a).await,
        0,
        "a still runs feeds it cannot renew"
    );
    let log = serve_a.log();
    assert!(log.contains("not renewed in time"), "{log}");
    let metrics = metrics_of(&a).await;
    assert!(
        metrics.contains("nightcrier_feed_lease_stops_total 1"),
        "{metrics}"
    );
    // healed, a rejoins and gets its share back, still never twice
    proxy.heal();
    sample_never_twice(&kms, dir.path(), Duration::from_secs(60), || async {
        active_feeds(&a).await > 0 && every_cluster_held_once(&kms).await
    })
    .await;
    assert!(held_by_a > 0);
    for serve in [serve_a, serve_b, serve_c] {
        serve.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_cut_from_the_database_keeps_its_feeds_and_a_newcomer_waits_for_them() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = fleet();
    let (proxy, proxied) = cuttable(&pg).await;
    let a = replica(dir.path(), "a", &proxied, &kms, "");
    let b = replica(dir.path(), "b", &pg.url, &kms, "");
    for config in [&a.config, &b.config] {
        let text = std::fs::read_to_string(config).unwrap().replace(
            "stop_margin = \"2s\"",
            "stop_margin = \"2s\"\nlone_hold = \"12s\"",
        );
        std::fs::write(config, text).unwrap();
    }
    let serve_a = Serve::start(&a.config);
    sample_never_twice(&kms, dir.path(), Duration::from_secs(90), || async {
        every_cluster_held_once(&kms).await && active_feeds(&a).await == CLUSTERS
    })
    .await;
    // a is alone: cut from the database it keeps its feeds past the 6 s lease (lease +
    // lone_hold = 18 s), while b, started during the outage, waits for them
    proxy.cut();
    let cut = tokio::time::Instant::now();
    let serve_b = Serve::start(&b.config);
    sample_never_twice(&kms, dir.path(), Duration::from_secs(30), || async {
        cut.elapsed() > Duration::from_secs(8)
    })
    .await;
    assert_eq!(
        active_feeds(&a).await,
        CLUSTERS,
        "a lone replica stopped its feeds within lone_hold{}",
        feed_logs(dir.path())
    );
    assert_eq!(active_feeds(&b).await, 0);
    // then a lets go before its longer leases expire, and b takes everything over
    sample_never_twice(&kms, dir.path(), Duration::from_secs(60), || async {
        every_cluster_held_once(&kms).await && active_feeds(&b).await == CLUSTERS
    })
    .await;
    assert_eq!(active_feeds(&a).await, 0);
    assert!(serve_a.log().contains("not renewed in time"));
    for serve in [serve_a, serve_b] {
        serve.stop();
    }
}

/// Replicas that record different `workers.fleet_max_agents` say so (the cap holds only when
/// every replica claims with it), and stop saying so once they agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_disagree_on_the_fleet_cap_say_so() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "ctx")]);
    let capped = replica(dir.path(), "capped", &pg.url, &kms, "");
    let text = std::fs::read_to_string(&capped.config)
        .unwrap()
        .replace("concurrency = 0", "concurrency = 0\nfleet_max_agents = 4");
    std::fs::write(&capped.config, text).unwrap();
    let uncapped = replica(dir.path(), "uncapped", &pg.url, &kms, "");
    let mut first = Serve::start(&capped.config);
    let second = Serve::start(&uncapped.config);
    first
        .wait_for("the disagreement", Duration::from_secs(60), || async {
            first_log_contains(dir.path(), "replicas disagree on workers.fleet_max_agents")
        })
        .await;
    let metrics = metrics_of(&capped).await;
    assert!(
        metrics.contains("nightcrier_fleet_cap_mismatch 1"),
        "{metrics}"
    );
    // the uncapped one leaves: alone, the capped one agrees with itself again
    second.stop();
    first
        .wait_for("agreement", Duration::from_secs(60), || async {
            first_log_contains(
                dir.path(),
                "replicas agree on workers.fleet_max_agents again",
            )
        })
        .await;
    first.stop();
}

fn first_log_contains(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir.join("capped"))
        .unwrap()
        .flatten()
        .any(|entry| {
            entry.path().extension().and_then(|e| e.to_str()) == Some("log")
                && std::fs::read_to_string(entry.path())
                    .unwrap_or_default()
                    .contains(text)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_identity_or_sqlite_file_refuses_to_start() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "ctx")]);
    let first = replica(
        dir.path(),
        "first",
        &pg.url,
        &kms,
        "[agent]\ninstance_id = \"twin\"",
    );
    let second = replica(
        dir.path(),
        "second",
        &pg.url,
        &kms,
        "[agent]\ninstance_id = \"twin\"",
    );
    let mut serve = Serve::start(&first.config);
    serve
        .wait_for("the first", Duration::from_secs(60), || async {
            reqwest::get(format!("http://{}/healthz", first.listen))
                .await
                .is_ok()
        })
        .await;
    let out = std::process::Command::new(crate::support::process::bin())
        .args(["-c", second.config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another nightcrier with instance id `twin` is running"),
        "{stderr}"
    );
    serve.stop();

    // SQLite: one serve per database file
    let sqlite = format!("sqlite://{}/one.db", dir.path().display());
    let one = replica(dir.path(), "one", &sqlite, &kms, "");
    let two = replica(dir.path(), "two", &sqlite, &kms, "");
    let mut serve = Serve::start(&one.config);
    serve
        .wait_for("the first", Duration::from_secs(60), || async {
            reqwest::get(format!("http://{}/healthz", one.listen))
                .await
                .is_ok()
        })
        .await;
    let out = std::process::Command::new(crate::support::process::bin())
        .args(["-c", two.config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the SQLite database"), "{stderr}");
    serve.stop();
}
