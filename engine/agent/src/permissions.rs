//! `kubectl auth can-i` probing for `incident_cluster_permissions.json`; never blocks a run.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use tokio::process::Command;

use crate::incident::{ClusterPermissions, UnknownPermissions};

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Either the checked permissions or why they are unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbedPermissions {
    /// All checks answered.
    Known(ClusterPermissions),
    /// kubectl or the kubeconfig is missing, or a check failed.
    Unknown(UnknownPermissions),
}

/// Runs the `kubectl auth can-i` checks of the original (pods, pods/log, events, deployments,
/// services, secrets, configmaps, nodes) against `kubeconfig`, in parallel, within 15 s.
pub async fn probe_cluster_permissions(
    cluster: &str,
    kubeconfig: &Path,
    secrets_access_allowed: bool,
) -> ProbedPermissions {
    let unknown = |warning: String| {
        ProbedPermissions::Unknown(UnknownPermissions {
            cluster_name: cluster.to_owned(),
            status: "unknown".to_owned(),
            validated_at: Utc::now(),
            warnings: vec![warning],
        })
    };
    if !tokio::fs::try_exists(kubeconfig).await.unwrap_or(false) {
        return unknown(format!("kubeconfig {} not found", kubeconfig.display()));
    }
    let checks: [&[&str]; 8] = [
        &["get", "pods"],
        &["get", "pods", "--subresource=log"],
        &["get", "events"],
        &["get", "deployments"],
        &["get", "services"],
        &["get", "secrets"],
        &["get", "configmaps"],
        &["get", "nodes"],
    ];
    let probes = checks.iter().map(|check| can_i(kubeconfig, check));
    let answers = match tokio::time::timeout(PROBE_TIMEOUT, futures::future::join_all(probes)).await
    {
        Ok(answers) => answers,
        Err(_) => return unknown("kubectl auth can-i checks timed out".to_owned()),
    };
    let mut allowed = Vec::with_capacity(answers.len());
    for answer in answers {
        match answer {
            Ok(value) => allowed.push(value),
            Err(warning) => return unknown(warning),
        }
    }
    let [
        pods,
        logs,
        events,
        deployments,
        services,
        secrets,
        configmaps,
        nodes,
    ] = allowed[..]
    else {
        return unknown("kubectl returned an unexpected number of answers".to_owned());
    };
    let mut warnings = Vec::new();
    if !(pods && logs && events) {
        warnings.push("minimum permissions (pods, pods/log, events) not met".to_owned());
    }
    ProbedPermissions::Known(ClusterPermissions {
        cluster_name: cluster.to_owned(),
        validated_at: Utc::now(),
        can_get_pods: pods,
        can_get_logs: logs,
        can_get_events: events,
        can_get_deployments: deployments,
        can_get_services: services,
        secrets_access_allowed,
        can_get_secrets: secrets,
        can_get_configmaps: configmaps,
        can_get_nodes: nodes,
        warnings,
    })
}

async fn can_i(kubeconfig: &Path, check: &[&str]) -> Result<bool, String> {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout=10s", "auth", "can-i"])
        .args(check)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("kubectl could not be run: {error}"))?;
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!(
            "kubectl auth can-i {} failed: {}",
            check.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_kubeconfig_is_unknown_not_an_error() {
        let result =
            probe_cluster_permissions("c1", Path::new("/nonexistent/kubeconfig"), false).await;
        let ProbedPermissions::Unknown(unknown) = result else {
            panic!("expected unknown, got {result:?}");
        };
        assert_eq!(unknown.status, "unknown");
        assert!(unknown.warnings[0].contains("not found"));
    }

    #[tokio::test]
    async fn unreachable_cluster_is_unknown_quickly() {
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("config");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
        )
        .unwrap();
        let result = probe_cluster_permissions("c1", &kubeconfig, false).await;
        assert!(
            matches!(result, ProbedPermissions::Unknown(_)),
            "{result:?}"
        );
    }
}
