//! `nightcrier ingest` through the shared ingest path, as a process: input of any size is
//! streamed in bounded memory, one message per line; garbage is dead-lettered in batches with a
//! short report; an oversized line is refused on its own; the named source plugin or an error,
//! never a stand-in decoder; every decoded event is validated.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};

use crate::support::process::bin;
use crate::support::{backends, built_plugins};

fn ingest(url: &str, plugins: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--database-url")
        .arg(url)
        .arg("ingest")
        .arg("--plugins")
        .arg(plugins)
        .args(args)
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .output()
        .unwrap()
}

fn migrate(url: &str) {
    let out = Command::new(bin())
        .args(["--database-url", url, "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn strings(url: &str, sql: &str) -> Vec<String> {
    let db = Database::connect(url).await.unwrap();
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

fn fault(n: usize, cluster: &str) -> String {
    format!(
        r#"{{"subscriptionId":"sub-3f2a9c1e","cluster":"{cluster}","faultId":"{n:016x}","faultType":"CrashLoop","severity":"critical","resource":{{"apiVersion":"v1","kind":"Pod","name":"checkout-{n}","namespace":"shop","uid":"6b1f0c2e-8a4d-4c3b-9e2f-{n:012}"}},"context":"Container entered CrashLoopBackOff state, restart count: 3, waiting message: back-off 40s restarting failed container=api pod=checkout-{n}_shop, last exit code: 1, last reason: Error","timestamp":"2025-12-20T14:07:31Z"}}"#
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Peak resident memory of a process, sampled from /proc until it exits.
fn run_measuring_peak(mut command: Command) -> (Output, u64) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut { stdout }, &mut buffer).unwrap();
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut { stderr }, &mut buffer).unwrap();
        buffer
    });
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(line) = text.lines().find(|line| line.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, peak_kib * 1024)
}

/// 200,000 faults in a 100 MB JSON-lines file: every one is stored, in bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_json_lines_file_is_streamed_in_bounded_memory() {
    let db = backends().await.into_iter().next().unwrap();
    migrate(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faults.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let padding = "x".repeat(150);
    for n in 0..200_000 {
        // ~500 bytes a line, like a real fault with a short log excerpt
        writeln!(
            file,
            "{}",
            fault(n, "prod").replace("Error\"", &format!("Error {padding}\""))
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 90_000_000, "{size} bytes");
    let mut command = Command::new(bin());
    command
        .args(["--database-url", &db.url, "ingest", "--plugins"])
        .arg(built_plugins())
        .arg(&path)
        .env_remove("NIGHTCRIER_DATABASE_URL");
    let (out, peak) = run_measuring_peak(command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ingested 200000 event(s), rejected 0"),
        "{}",
        stdout(&out).lines().last().unwrap_or_default()
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM fault_events").await,
        200_000
    );
    // Reading the file whole peaked at 300 MB for a quarter of it. Streamed, the peak does not
    // follow the input: about 130 MiB for 20,000 lines and 160 MiB for 100,000 or 200,000 (a
    // debug build: 35 MiB of it is the binary, the rest the buffers between reader and writer).
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
}

/// 100,000 garbage lines: all dead-lettered, reported in a few lines, not one per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dead_lettered_in_batches_and_reported_in_a_few_lines() {
    for db in backends().await {
        migrate(&db.url);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.ndjson");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for n in 0..100_000 {
            writeln!(file, "not json {n}").unwrap();
        }
        writeln!(file, "{}", fault(1, "prod")).unwrap();
        file.flush().unwrap();
        drop(file);
        let out = ingest(&db.url, &built_plugins(), &[path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}: {}",
            db.backend,
            stderr(&out)
        );
        assert!(
            stdout(&out).contains("ingested 1 event(s), rejected 100000"),
            "{}",
            stdout(&out)
        );
        let report = stderr(&out);
        assert!(
            report.lines().count() <= 12,
            "{} lines",
            report.lines().count()
        );
        assert!(report.contains("99990 more rejected"), "{report}");
        assert_eq!(
            scalar(&db.url, "SELECT COUNT(*) FROM rejected_events").await,
            100_000,
            "{}",
            db.backend
        );
        let first: Vec<String> = strings(
            &db.url,
            "SELECT reason FROM rejected_events ORDER BY received_at LIMIT 1",
        )
        .await;
        assert!(first[0].contains("malformed"), "{first:?}");
    }
}

#[tokio::test]
async fn an_oversized_line_is_refused_on_its_own_with_its_true_size() {
    let db = backends().await.into_iter().next().unwrap();
    migrate(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.ndjson");
    let big = format!("{{\"pad\":\"{}\"}}", "y".repeat(2 << 20));
    std::fs::write(
        &path,
        format!("{}\n{big}\n{}\n", fault(1, "prod"), fault(2, "prod")),
    )
    .unwrap();
    let out = ingest(&db.url, &built_plugins(), &[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ingested 2 event(s), rejected 1"),
        "{}",
        stdout(&out)
    );
    let reasons = strings(&db.url, "SELECT reason FROM rejected_events").await;
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains(&format!("line 2 is {} bytes", big.len())),
        "{reasons:?}"
    );
    assert!(
        stderr(&out).contains("mixed.ndjson:line 2"),
        "{}",
        stderr(&out)
    );
}

/// The plugin an operator names, or an error: a refused, missing or wrong-world plugin stores
/// nothing and exits non-zero with the reason.
#[tokio::test]
async fn a_refused_or_missing_source_plugin_is_an_error_and_nothing_is_stored() {
    let db = backends().await.into_iter().next().unwrap();
    migrate(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.json");
    std::fs::write(&input, fault(1, "prod")).unwrap();
    let folder = dir.path().join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("kubernetes-mcp.wasm"), b"not a component").unwrap();
    std::fs::copy(
        built_plugins().join("noise-filter.wasm"),
        folder.join("noise-filter.wasm"),
    )
    .unwrap();

    let refused = ingest(&db.url, &folder, &[input.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("source plugin `kubernetes-mcp` was refused"),
        "{}",
        stderr(&refused)
    );
    let missing = ingest(
        &db.url,
        &folder,
        &["--source", "nope", input.to_str().unwrap()],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no source plugin `nope`"),
        "{}",
        stderr(&missing)
    );
    let wrong = ingest(
        &db.url,
        &folder,
        &["--source", "noise-filter", input.to_str().unwrap()],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("not a source"),
        "{}",
        stderr(&wrong)
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM fault_events").await,
        0
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM rejected_events").await,
        0
    );
}

/// A decoded event is stored only if it is sound: a path for a cluster, a timestamp that is no
/// time, an empty fault id are dead-lettered with the reason; their good siblings are kept.
#[tokio::test]
async fn decoded_events_are_validated_and_bad_ones_dead_lettered() {
    for db in backends().await {
        migrate(&db.url);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.ndjson");
        let lines = [
            fault(1, "prod"),
            fault(2, "../../../../tmp/x"),
            fault(3, "/etc/passwd"),
            fault(4, "prod").replace("2025-12-20T14:07:31Z", "not-a-time"),
            fault(5, "prod").replace("\"0000000000000005\"", "\"\""),
            fault(6, "admin@prod"),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let out = ingest(&db.url, &built_plugins(), &[path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("ingested 2 event(s), rejected 4"),
            "{}",
            stdout(&out)
        );
        let mut clusters = strings(&db.url, "SELECT cluster FROM fault_events").await;
        clusters.sort();
        assert_eq!(clusters, ["admin@prod", "prod"], "{}", db.backend);
        let reasons = strings(&db.url, "SELECT reason FROM rejected_events")
            .await
            .join("\n");
        assert!(reasons.contains("\"../../../../tmp/x\""), "{reasons}");
        assert!(reasons.contains("\"/etc/passwd\""), "{reasons}");
        assert!(reasons.contains("not-a-time"), "{reasons}");
        assert!(reasons.contains("faultId"), "{reasons}");
    }
}

/// A source plugin that traps, runs past its deadline, eats memory or returns too much during
/// `decode`: the message is dead-lettered with the cause and the failure is a `plugin_runs` row
/// of the source stage.
#[tokio::test]
async fn source_plugin_failures_are_dead_lettered_and_recorded_as_plugin_runs() {
    for db in backends().await {
        migrate(&db.url);
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("one.json");
        std::fs::write(&input, "{}").unwrap();
        let fixtures = built_plugins().parent().unwrap().join("fixtures");
        // deadlines generous enough for a busy machine, but for the loop, which must hit it
        for (attack, outcome, cause, deadline_ms) in [
            ("trap", "trap", "hostile source panics on purpose", 5000),
            ("loop", "timeout", "deadline", 300),
            ("memory", "memory_limit", "memory", 5000),
            ("oversized", "output_too_large", "over the cap", 5000),
        ] {
            let config = dir.path().join(format!("{attack}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[plugins]\ndir = \"{}\"\n[plugins.plugin.hostile-source]\ndeadline_ms = {deadline_ms}\nmemory_mib = 32\nmax_output_kib = 256\n[plugins.plugin.hostile-source.config]\nattack = \"{attack}\"\n",
                    fixtures.display()
                ),
            )
            .unwrap();
            let out = Command::new(bin())
                .arg("-c")
                .arg(&config)
                .args([
                    "--database-url",
                    &db.url,
                    "ingest",
                    "--source",
                    "hostile-source",
                ])
                .arg(&input)
                .env_remove("NIGHTCRIER_DATABASE_URL")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(3), "{attack}: {}", stderr(&out));
            let reason = strings(
                &db.url,
                "SELECT reason FROM rejected_events ORDER BY received_at DESC LIMIT 1",
            )
            .await
            .remove(0);
            assert!(reason.contains(cause), "{attack}: {reason}");
            let runs = strings(
                &db.url,
                &format!(
                    "SELECT plugin FROM plugin_runs WHERE stage = 'source' AND outcome = '{outcome}' AND incident_id IS NULL"
                ),
            )
            .await;
            assert_eq!(runs, ["hostile-source"], "{}: {attack}", db.backend);
        }
        // a decode that works records no run
        let config = dir.path().join("bad.toml");
        std::fs::write(
            &config,
            format!(
                "[plugins]\ndir = \"{}\"\n[plugins.plugin.hostile-source.config]\nattack = \"bad-events\"\n",
                fixtures.display()
            ),
        )
        .unwrap();
        let out = Command::new(bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--database-url",
                &db.url,
                "ingest",
                "--source",
                "hostile-source",
            ])
            .arg(&input)
            .env_remove("NIGHTCRIER_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("ingested 1 event(s), rejected 3"),
            "{}",
            stdout(&out)
        );
        assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM plugin_runs").await, 4);
        assert_eq!(
            strings(&db.url, "SELECT cluster FROM fault_events").await,
            ["prod"]
        );
    }
}

/// `ingest`'s rejection lines show file names and reasons escaped: a name with a newline and an
/// escape sequence cannot forge a line or drive the terminal.
#[tokio::test]
async fn rejection_lines_escape_what_they_quote() {
    let db = backends().await.into_iter().next().unwrap();
    migrate(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("evil\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J.json");
    std::fs::write(&path, "not json\n").unwrap();
    let out = ingest(&db.url, &built_plugins(), &[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = stderr(&out);
    assert!(!report.contains('\u{1b}'), "{report:?}");
    assert!(
        !report.lines().any(|line| line.starts_with("2026-01-01")),
        "{report:?}"
    );
    assert!(report.contains("evil\\n2026"), "{report:?}");
}
