//! `nightcrier bench fleet`: how the feed assignment (`replica::owner_of`, the code replicas run)
//! spreads a fleet of clusters over replicas, and how many feeds move when a replica joins or
//! leaves. Pure computation, no database.

use std::collections::BTreeMap;

use super::Figure;
use crate::replica::owner_of;

/// Options of `nightcrier bench fleet`.
#[derive(Clone, Debug, clap::Args)]
pub struct FleetBenchArgs {
    /// Replicas.
    #[arg(long, default_value_t = 10)]
    pub replicas: usize,
    /// Clusters (one MCP feed each).
    #[arg(long, default_value_t = 10_000)]
    pub clusters: usize,
}

fn assignment(replicas: &[String], clusters: usize) -> BTreeMap<String, String> {
    (0..clusters)
        .map(|n| {
            let feed = format!("mcp:cluster-{n:05}");
            let owner = owner_of(&feed, replicas).unwrap_or_default().to_owned();
            (feed, owner)
        })
        .collect()
}

/// Computes the spread and the moves.
pub fn run(args: &FleetBenchArgs) -> Vec<Figure> {
    let replicas: Vec<String> = (0..args.replicas.max(1))
        .map(|n| format!("nc-{n:02}"))
        .collect();
    let base = assignment(&replicas, args.clusters);
    let mut per_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in base.values() {
        *per_replica.entry(owner.as_str()).or_default() += 1;
    }
    let counts: Vec<f64> = replicas
        .iter()
        .map(|r| per_replica.get(r.as_str()).copied().unwrap_or(0) as f64)
        .collect();
    let mean = args.clusters as f64 / replicas.len() as f64;
    let deviation =
        (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64).sqrt();
    let moved = |other: &[String]| {
        let next = assignment(other, args.clusters);
        base.iter()
            .filter(|(feed, owner)| next[*feed] != **owner)
            .count() as f64
    };
    let mut joined = replicas.clone();
    joined.push("nc-new".into());
    let left: Vec<String> = replicas.iter().skip(1).cloned().collect();
    vec![
        Figure {
            name: format!(
                "{} clusters over {} replicas: mean",
                args.clusters,
                replicas.len()
            ),
            value: mean,
            unit: "feeds",
        },
        Figure {
            name: "fewest on one replica".into(),
            value: counts.iter().copied().fold(f64::MAX, f64::min),
            unit: "feeds",
        },
        Figure {
            name: "most on one replica".into(),
            value: counts.iter().copied().fold(0.0, f64::max),
            unit: "feeds",
        },
        Figure {
            name: "standard deviation".into(),
            value: deviation,
            unit: "feeds",
        },
        Figure {
            name: "moved when a replica joins (ideal: clusters / (replicas + 1))".into(),
            value: moved(&joined),
            unit: "feeds",
        },
        Figure {
            name: "moved when a replica leaves (ideal: its own share)".into(),
            value: moved(&left),
            unit: "feeds",
        },
    ]
}
