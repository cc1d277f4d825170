//! Benchmark: create+start+wait+remove of a no-op container through bollard versus
//! `docker run --rm` of the same image, interleaved in one run; prints medians and the ratio.
//!
//! Run: `cargo bench -p nightcrier-agent --bench container_lifecycle`
//! (`NIGHTCRIER_BENCH_ITERATIONS` overrides the default 30 iterations).

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/docker/support.rs"]
mod support;

use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use futures::StreamExt;
use tokio::time::Instant;

/// Per-step times of one bollard lifecycle.
#[derive(Default, Clone, Copy)]
struct Steps {
    create: Duration,
    start: Duration,
    wait: Duration,
    remove: Duration,
}

impl Steps {
    fn total(&self) -> Duration {
        self.create + self.start + self.wait + self.remove
    }
}

async fn bollard_lifecycle(docker: &bollard::Docker, image: &str, network: &str) -> Steps {
    let mut steps = Steps::default();
    let began = Instant::now();
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(image.to_owned()),
                cmd: Some(vec!["/bin/true".to_owned()]),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(network.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    steps.create = began.elapsed();
    let began = Instant::now();
    docker.start_container(&created.id, None).await.unwrap();
    steps.start = began.elapsed();
    let began = Instant::now();
    let waited = docker
        .wait_container(&created.id, None)
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited.status_code, 0);
    steps.wait = began.elapsed();
    let began = Instant::now();
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
    steps.remove = began.elapsed();
    steps
}

async fn cli_lifecycle(image: &str, network: &str) -> Duration {
    let began = Instant::now();
    let status = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--network", network, image, "/bin/true"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    began.elapsed()
}

/// One `docker version` call: the CLI's process start, config load and one API round trip — the
/// most that talking to the engine directly can save per container.
async fn cli_overhead() -> Duration {
    let began = Instant::now();
    let status = tokio::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    began.elapsed()
}

fn summary(name: &str, samples: &mut [Duration]) -> Duration {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<34} n={:<3} median {:>7.1} ms  mean {:>7.1} ms  p90 {:>7.1} ms",
        samples.len(),
        median.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    median
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let iterations: usize = std::env::var("NIGHTCRIER_BENCH_ITERATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let image = support::test_image();
    let test = support::TestRunner::new().await;
    let docker = test.runner.docker().clone();
    // Warm-up: first container creation pays for layer setup.
    bollard_lifecycle(&docker, image, "bridge").await;
    cli_lifecycle(image, "bridge").await;

    let mut overhead: Vec<Duration> = Vec::new();
    for _ in 0..iterations {
        overhead.push(cli_overhead().await);
    }
    let overhead_median = summary("docker CLI round trip (version)", &mut overhead);

    for network in ["bridge", "none"] {
        let (mut through_bollard, mut through_cli) = (Vec::new(), Vec::new());
        let mut steps = Vec::new();
        for _ in 0..iterations {
            let step = bollard_lifecycle(&docker, image, network).await;
            through_bollard.push(step.total());
            steps.push(step);
            through_cli.push(cli_lifecycle(image, network).await);
        }
        println!("network {network}:");
        let bollard_median = summary("  bollard create+start+wait+remove", &mut through_bollard);
        let cli_median = summary("  docker run --rm", &mut through_cli);
        for (name, pick) in [
            (
                "    create",
                (|step: &Steps| step.create) as fn(&Steps) -> Duration,
            ),
            ("    start", |step: &Steps| step.start),
            ("    wait", |step: &Steps| step.wait),
            ("    remove", |step: &Steps| step.remove),
        ] {
            let mut samples: Vec<Duration> = steps.iter().map(pick).collect();
            summary(name, &mut samples);
        }
        println!(
            "  ratio bollard/cli (median): {:.2}  (goal <= 0.70)",
            bollard_median.as_secs_f64() / cli_median.as_secs_f64()
        );
        println!(
            "  floor if every CLI cost were saved: {:.2}",
            cli_median.saturating_sub(overhead_median).as_secs_f64() / cli_median.as_secs_f64()
        );
    }

    let mut through_runner = Vec::new();
    for _ in 0..iterations {
        let request = support::request(support::profile("noop", 60, ""));
        let began = Instant::now();
        test.runner.run(request).await.unwrap();
        through_runner.push(began.elapsed());
    }
    summary(
        "DockerRunner::run (hardened, network none)",
        &mut through_runner,
    );
    test.assert_no_containers().await;
}
