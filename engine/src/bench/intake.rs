//! `nightcrier bench intake`: a fleet of simulated kubernetes-mcp-servers (`crate::mcp_sim`, one
//! process) against a real `serve` child process with the bundled `kubernetes-mcp` plugin and
//! no agents. It measures what the intake goals name: the `serve` RSS holding every
//! subscription, events per second from the servers' streams to committed rows at each offered
//! rate, receipt → commit latency (from `serve`'s own histogram), and, after every server
//! restarts at once, the time until each subscription is active again and the peak
//! connection attempts per second.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use super::Figure;
use crate::mcp_sim::Fleet;

/// Options of `nightcrier bench intake`.
#[derive(Clone, Debug, clap::Args)]
pub struct IntakeBenchArgs {
    /// Simulated servers, one subscription each.
    #[arg(long, default_value_t = 2_000)]
    pub servers: usize,
    /// Offered fault rates (events per second over the whole fleet), one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,8000")]
    pub rates: Vec<u64>,
    /// Length of each rate phase.
    #[arg(long, default_value_t = 20)]
    pub phase_seconds: u64,
    /// The folder holding the built `kubernetes-mcp.wasm` (`bash plugins/build.sh`).
    #[arg(long, default_value = "plugins/target/plugins")]
    pub plugins: PathBuf,
    /// How long every server stays down in the mass restart (0: no restart phase).
    #[arg(long, default_value_t = 10)]
    pub down_seconds: u64,
    /// `[intake] linger` of the `serve` under test (its default unless given).
    #[arg(long)]
    pub linger: Option<String>,
}

/// A scrape of the figures `serve` exports that the bench reads.
#[derive(Clone, Debug, Default)]
struct Scrape {
    committed: f64,
    /// `(le, cumulative count)` of the receipt → commit histogram, all kinds summed.
    latency: Vec<(f64, f64)>,
}

/// Runs the benchmark and returns its figures.
pub async fn run(args: &IntakeBenchArgs, url: Option<&str>) -> anyhow::Result<Vec<Figure>> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let plugin = args.plugins.join("kubernetes-mcp.wasm");
    if !plugin.is_file() {
        bail!(
            "{} is missing: build the bundled plugins first (bash plugins/build.sh) or pass --plugins",
            plugin.display()
        );
    }
    let plugins = scratch.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&plugin, plugins.join("kubernetes-mcp.wasm"))?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/bench.db", scratch.path().display()),
    };
    let backend = if url.starts_with("postgres") {
        "Postgres"
    } else {
        "SQLite"
    };

    let started = Instant::now();
    let fleet = Fleet::start(args.servers).await?;
    let listen = free_loopback_addr()?;
    let config = scratch.path().join("nightcrier.toml");
    let mut text = config_text(scratch.path(), &url, &listen, &plugins, &fleet);
    if let Some(linger) = &args.linger {
        text.push_str(&format!("\n[intake]\nlinger = \"{linger}\"\n"));
    }
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(scratch.path().join("serve.log"))?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("failed to start serve")?;
    let pid = child.id().context("serve exited at once")?;
    let mut figures = Vec::new();
    let mut figure = |name: String, value: f64, unit: &'static str| {
        eprintln!("{name:<64} {value:>10.1} {unit}");
        figures.push(Figure { name, value, unit });
    };

    // Every subscription up.
    let all_up =
        wait_all_active(&fleet, args.servers, Duration::from_secs(300), &mut child).await?;
    figure(
        format!(
            "{backend}: {} subscriptions active after start",
            args.servers
        ),
        all_up.as_secs_f64(),
        "s",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    figure(
        format!(
            "{backend}: serve RSS holding {} subscriptions",
            args.servers
        ),
        rss_kib(pid, "VmRSS")? as f64 / 1024.0,
        "MiB",
    );

    let client = reqwest::Client::new();
    for &rate in &args.rates {
        let before = scrape(&client, &listen).await?;
        let cpu_before = cpu_ticks(pid)?;
        let sent_before = fleet.counters.faults_sent.load(Ordering::Relaxed);
        let phase = Duration::from_secs(args.phase_seconds);
        let mut peak_rss = 0;
        offer(&fleet, rate, phase, || {
            peak_rss = peak_rss.max(rss_kib(pid, "VmRSS").unwrap_or(0));
        })
        .await;
        let at_end = scrape(&client, &listen).await?;
        let cpu_after = cpu_ticks(pid)?;
        let sent = fleet.counters.faults_sent.load(Ordering::Relaxed) - sent_before;
        // Let the backlog drain, then read the latencies of everything sent in the phase.
        let drain_started = Instant::now();
        let mut drained = at_end.clone();
        while drained.committed - before.committed < sent as f64
            && drain_started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drained = scrape(&client, &listen).await?;
        }
        let seconds = phase.as_secs_f64();
        let name = |what: &str| format!("{backend}: offered {rate}/s: {what}");
        figure(name("sent by the fleet"), sent as f64 / seconds, "events/s");
        figure(
            name("committed during the phase"),
            (at_end.committed - before.committed) / seconds,
            "events/s",
        );
        figure(
            name("backlog drained after the phase in"),
            drain_started.elapsed().as_secs_f64(),
            "s",
        );
        let latency = histogram_delta(&before.latency, &drained.latency);
        figure(
            name("receipt → commit p50"),
            quantile(&latency, 0.50) * 1000.0,
            "ms",
        );
        figure(
            name("receipt → commit p99"),
            quantile(&latency, 0.99) * 1000.0,
            "ms",
        );
        figure(
            name("messages committed within 20 ms"),
            share_within(&latency, 0.02) * 100.0,
            "%",
        );
        figure(
            name("serve CPU"),
            (cpu_after - cpu_before) as f64 / ticks_per_second() / seconds * 100.0,
            "% of a core",
        );
        figure(name("serve peak RSS"), peak_rss as f64 / 1024.0, "MiB");
    }

    if args.down_seconds > 0 {
        let restarted = Instant::now();
        fleet
            .restart_all(Duration::from_secs(args.down_seconds))
            .await;
        // The sessions are gone; wait until the feeds notice and come back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let back = wait_all_active(&fleet, args.servers, Duration::from_secs(300), &mut child)
            .await?
            + Duration::from_millis(500);
        let attempts = fleet.attempts_per_second_since(restarted).await;
        figure(
            format!(
                "{backend}: every subscription active again after a {} s fleet restart",
                args.down_seconds
            ),
            back.as_secs_f64(),
            "s",
        );
        figure(
            format!("{backend}: connection attempts during the restart"),
            attempts.iter().sum::<u64>() as f64,
            "initialize",
        );
        figure(
            format!("{backend}: peak connection attempts"),
            attempts.iter().copied().max().unwrap_or(0) as f64,
            "per s",
        );
        eprintln!("attempts per second from the restart: {attempts:?}");
    }
    figure(
        format!("{backend}: serve peak RSS over the whole run"),
        rss_kib(pid, "VmHWM")? as f64 / 1024.0,
        "MiB",
    );
    figure(
        format!("{backend}: faults the fleet could not send"),
        fleet.counters.faults_not_sent.load(Ordering::Relaxed) as f64,
        "events",
    );
    figure(
        format!("{backend}: whole run"),
        started.elapsed().as_secs_f64(),
        "s",
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(figures)
}

fn config_text(dir: &Path, url: &str, listen: &str, plugins: &Path, fleet: &Fleet) -> String {
    let mut text = format!(
        "data_dir = \"{data}\"\n\n[database]\nurl = \"{url}\"\n\n[workers]\nconcurrency = 0\n\n\
         [http]\nlisten = \"{listen}\"\n\n[plugins]\ndir = \"{plugins}\"\n",
        data = dir.join("data").display(),
        plugins = plugins.display(),
    );
    for (cluster, endpoint) in fleet.endpoints() {
        text.push_str(&format!(
            "\n[[clusters]]\nname = \"{cluster}\"\nmcp.url = \"{endpoint}\"\n"
        ));
    }
    text
}

fn free_loopback_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

async fn wait_all_active(
    fleet: &Arc<Fleet>,
    servers: usize,
    limit: Duration,
    child: &mut tokio::process::Child,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if fleet.active().await >= servers {
            return Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            bail!("serve exited ({status}); its log is in the scratch folder");
        }
        if started.elapsed() > limit {
            bail!(
                "only {} of {servers} subscriptions active after {limit:?}",
                fleet.active().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Offers `rate` faults per second for `length`, in 10 ms steps, calling `sample` each second.
async fn offer(fleet: &Fleet, rate: u64, length: Duration, mut sample: impl FnMut()) {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last_sample = started;
    while started.elapsed() < length {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > sent {
            fleet.send_faults(due - sent).await;
            sent = due;
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            sample();
            last_sample = Instant::now();
        }
    }
}

async fn scrape(client: &reqwest::Client, listen: &str) -> anyhow::Result<Scrape> {
    let text = client
        .get(format!("http://{listen}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse_scrape(&text))
}

fn parse_scrape(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with("nightcrier_events_committed_total") {
            scrape.committed += value;
        } else if series.starts_with("nightcrier_ingest_commit_latency_seconds_bucket") {
            let Some(le) = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            match scrape.latency.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, count)) => *count += value,
                None => scrape.latency.push((le, value)),
            }
        }
    }
    scrape.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    scrape
}

fn histogram_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated inside its bucket.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let width = count - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, count);
    }
    lower.0
}

fn share_within(buckets: &[(f64, f64)], bound: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    if total <= 0.0 {
        return 0.0;
    }
    buckets
        .iter()
        .find(|(le, _)| (*le - bound).abs() < 1e-12)
        .map_or(0.0, |(_, count)| count / total)
}

/// A `Vm…` line of `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches(" kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture nightcrier builds for
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let buckets = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.005, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&buckets, 0.5) - 0.001).abs() < 1e-9);
        assert!((quantile(&buckets, 0.7) - 0.0015).abs() < 1e-9);
        assert!((quantile(&buckets, 0.99) - 0.0047).abs() < 1e-9);
        assert!((share_within(&buckets, 0.002) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn a_scrape_sums_series_over_labels() {
        let text = "# TYPE x counter\n\
            nightcrier_events_committed_total{source=\"k\",cluster=\"a\"} 3\n\
            nightcrier_events_committed_total{source=\"k\",cluster=\"b\"} 4\n\
            nightcrier_ingest_commit_latency_seconds_bucket{kind=\"mcp\",le=\"0.001\"} 2\n\
            nightcrier_ingest_commit_latency_seconds_bucket{kind=\"webhook\",le=\"0.001\"} 1\n\
            nightcrier_ingest_commit_latency_seconds_bucket{kind=\"mcp\",le=\"+Inf\"} 5\n";
        let scrape = parse_scrape(text);
        assert_eq!(scrape.committed, 7.0);
        assert_eq!(scrape.latency, vec![(0.001, 3.0), (f64::INFINITY, 5.0)]);
    }
}
