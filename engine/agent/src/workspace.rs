//! The per-incident workspace: directory layout, the files the agent reads, and the modes and
//! ownership that let the container user write `output/` and `logs/` and nothing else.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::AgentError;
use crate::incident::{IncidentDocument, IncidentInput};
use crate::profile::AgentProfile;

/// File names kept from the original (§12).
pub const INCIDENT_FILE: &str = "incident.json";
/// Cluster permissions file.
pub const PERMISSIONS_FILE: &str = "incident_cluster_permissions.json";
/// The prompt as sent, with metadata; mounted as `/home/agent/prompt.md`.
pub const PROMPT_FILE: &str = "prompt-sent.md";
/// Context files from pre-triage plugins.
pub const CONTEXT_DIR: &str = "context";
/// Where the agent writes its report.
pub const OUTPUT_DIR: &str = "output";
/// Captured logs (the agent may add its own files here).
pub const LOGS_DIR: &str = "logs";
/// The report the validation looks for, relative to the workspace.
pub const REPORT_FILE: &str = "output/investigation.md";

/// Home directory of the agent inside the container.
pub const AGENT_HOME: &str = "/home/agent";

/// Inline at most this many bytes of one context file into the prompt; the rest is only mounted.
const INLINE_CONTEXT_LIMIT: usize = 32 * 1024;

/// Paths of the three captured log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    /// Raw stdout.
    pub stdout: PathBuf,
    /// Raw stderr.
    pub stderr: PathBuf,
    /// Timestamped, stream-tagged lines of both.
    pub full: PathBuf,
}

impl LogPaths {
    /// `agent-stdout.log` etc. → path, as in `incident.json`'s `logPaths`.
    pub fn as_map(&self) -> BTreeMap<String, String> {
        [
            ("agent-stdout.log", &self.stdout),
            ("agent-stderr.log", &self.stderr),
            ("agent-full.log", &self.full),
        ]
        .into_iter()
        .map(|(name, path)| (name.to_owned(), path.display().to_string()))
        .collect()
    }
}

/// One incident's directory under the workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    incident_id: String,
    directory: PathBuf,
}

/// What goes into a new workspace.
pub(crate) struct WorkspaceContents<'a> {
    pub(crate) incident: &'a IncidentInput,
    pub(crate) permissions_json: String,
    pub(crate) context_files: &'a [(String, Vec<u8>)],
    pub(crate) system_prompt: &'a str,
    pub(crate) additional_prompt: Option<&'a str>,
    pub(crate) profile: &'a AgentProfile,
    pub(crate) started_at: DateTime<Utc>,
}

impl Workspace {
    /// The workspace of `incident_id` under `root` (not created).
    pub fn open(root: &Path, incident_id: &str) -> Result<Self, AgentError> {
        crate::error::check_incident_id(incident_id)?;
        Ok(Self {
            incident_id: incident_id.to_owned(),
            directory: root.join(incident_id),
        })
    }

    /// The incident directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// `output/`.
    pub fn output_dir(&self) -> PathBuf {
        self.directory.join(OUTPUT_DIR)
    }

    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.directory.join(LOGS_DIR)
    }

    /// `context/`.
    pub fn context_dir(&self) -> PathBuf {
        self.directory.join(CONTEXT_DIR)
    }

    /// `output/investigation.md`.
    pub fn report_path(&self) -> PathBuf {
        self.directory.join(REPORT_FILE)
    }

    /// `incident.json`.
    pub fn incident_path(&self) -> PathBuf {
        self.directory.join(INCIDENT_FILE)
    }

    /// The three captured logs.
    pub fn log_paths(&self) -> LogPaths {
        let logs = self.logs_dir();
        LogPaths {
            stdout: logs.join("agent-stdout.log"),
            stderr: logs.join("agent-stderr.log"),
            full: logs.join("agent-full.log"),
        }
    }

    fn io_error(&self, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + use<> {
        let incident_id = self.incident_id.clone();
        let path = path.to_owned();
        move |source| AgentError::Workspace {
            incident_id,
            path,
            source,
        }
    }

    /// Creates the directory tree and files. Blocking; call from `spawn_blocking`.
    pub(crate) fn create(&self, contents: &WorkspaceContents<'_>) -> Result<(), AgentError> {
        let directory = &self.directory;
        fs::create_dir_all(directory).map_err(self.io_error(directory))?;
        set_mode(directory, 0o700).map_err(self.io_error(directory))?;
        let our_uid = fs::metadata(directory)
            .map_err(self.io_error(directory))?
            .uid();

        let document = IncidentDocument::investigating(contents.incident, contents.started_at);
        let incident_json =
            serde_json::to_string_pretty(&document).expect("incident document always serialises");
        self.write_read_only(&self.incident_path(), incident_json.as_bytes())?;
        let permissions_path = directory.join(PERMISSIONS_FILE);
        self.write_read_only(&permissions_path, contents.permissions_json.as_bytes())?;

        let context_dir = self.context_dir();
        fs::create_dir_all(&context_dir).map_err(self.io_error(&context_dir))?;
        set_mode(&context_dir, 0o755).map_err(self.io_error(&context_dir))?;
        for (name, bytes) in contents.context_files {
            let path = context_dir.join(safe_context_name(name));
            self.write_read_only(&path, bytes)?;
        }

        let prompt = compose_prompt(contents, &incident_json);
        self.write_read_only(&directory.join(PROMPT_FILE), prompt.as_bytes())?;

        let profile = contents.profile;
        let output_dir = self.output_dir();
        let logs_dir = self.logs_dir();
        for path in [&output_dir, &logs_dir] {
            fs::create_dir_all(path).map_err(self.io_error(path))?;
        }
        // Root can hand output/ to the agent user and keep logs/ in a sticky, group-writable
        // directory: the agent may add files there but cannot touch the captured logs.
        if our_uid == 0 {
            std::os::unix::fs::chown(&output_dir, Some(profile.uid), Some(profile.gid))
                .map_err(self.io_error(&output_dir))?;
            set_mode(&output_dir, 0o700).map_err(self.io_error(&output_dir))?;
            std::os::unix::fs::chown(&logs_dir, Some(0), Some(profile.gid))
                .map_err(self.io_error(&logs_dir))?;
            set_mode(&logs_dir, 0o1770).map_err(self.io_error(&logs_dir))?;
        } else if our_uid == profile.uid {
            set_mode(&output_dir, 0o700).map_err(self.io_error(&output_dir))?;
            set_mode(&logs_dir, 0o700).map_err(self.io_error(&logs_dir))?;
        } else {
            tracing::warn!(
                incident_id = %self.incident_id,
                uid = our_uid,
                agent_uid = profile.uid,
                "nightcrier is neither root nor the agent uid; output/ and logs/ are world-writable"
            );
            set_mode(&output_dir, 0o777).map_err(self.io_error(&output_dir))?;
            set_mode(&logs_dir, 0o1777).map_err(self.io_error(&logs_dir))?;
        }
        for path in self.log_paths().as_map().values() {
            let path = Path::new(path);
            fs::write(path, b"").map_err(self.io_error(path))?;
            set_mode(path, 0o644).map_err(self.io_error(path))?;
        }
        Ok(())
    }

    fn write_read_only(&self, path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
        fs::write(path, bytes).map_err(self.io_error(path))?;
        // Readable by the container user (the workspace itself is 0700, and reached only
        // through the read-only bind mounts).
        set_mode(path, 0o644).map_err(self.io_error(path))
    }

    /// Rewrites `incident.json` with the final state. Blocking.
    pub(crate) fn write_final(&self, document: &IncidentDocument) -> Result<(), AgentError> {
        let text =
            serde_json::to_string_pretty(document).expect("incident document always serialises");
        let path = self.incident_path();
        let temporary = self.directory.join(".incident.json.tmp");
        fs::write(&temporary, text).map_err(self.io_error(&temporary))?;
        set_mode(&temporary, 0o644).map_err(self.io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(self.io_error(&path))
    }

    /// Reads `incident.json`. Blocking.
    pub(crate) fn read_document(&self) -> Result<IncidentDocument, AgentError> {
        let path = self.incident_path();
        let text = fs::read(&path).map_err(self.io_error(&path))?;
        serde_json::from_slice(&text).map_err(|error| AgentError::Workspace {
            incident_id: self.incident_id.clone(),
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })
    }

    /// `.credentials/`: private copies of the kubeconfig and secret files, readable by the
    /// container user whatever the originals' owner and mode; removed when the run ends.
    pub(crate) fn credentials_dir(&self) -> PathBuf {
        self.directory.join(".credentials")
    }

    /// Copies the kubeconfig and secret files into `.credentials/` (mode 0644 inside the 0700
    /// workspace, reached only through read-only binds) and returns their binds. Blocking.
    pub(crate) fn stage_credentials(
        &self,
        kubeconfig: Option<&Path>,
        secret_files: &[crate::profile::SecretFileConfig],
    ) -> Result<Vec<String>, AgentError> {
        let directory = self.credentials_dir();
        let secrets = directory.join("secrets");
        fs::create_dir_all(&secrets).map_err(self.io_error(&secrets))?;
        set_mode(&directory, 0o700).map_err(self.io_error(&directory))?;
        let mut binds = Vec::new();
        let mut stage = |source: &Path, staged: PathBuf, target: String| {
            fs::copy(source, &staged).map_err(self.io_error(source))?;
            set_mode(&staged, 0o644).map_err(self.io_error(&staged))?;
            binds.push(format!("{}:{target}:ro", staged.display()));
            Ok::<(), AgentError>(())
        };
        if let Some(kubeconfig) = kubeconfig {
            stage(
                kubeconfig,
                directory.join("kubeconfig"),
                format!("{AGENT_HOME}/.kube/config"),
            )?;
        }
        for file in secret_files {
            stage(
                &file.host_path,
                secrets.join(&file.name),
                format!("/run/secrets/{}", file.name),
            )?;
        }
        Ok(binds)
    }

    /// Deletes `.credentials/`. Blocking.
    pub(crate) fn remove_credentials(&self) -> Result<(), AgentError> {
        let directory = self.credentials_dir();
        match fs::remove_dir_all(&directory) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.io_error(&directory)(error)),
        }
    }

    /// Bind mounts (host:container:mode) for the container.
    pub(crate) fn binds(&self) -> Vec<String> {
        let directory = self.directory.display();
        vec![
            format!("{directory}/{INCIDENT_FILE}:{AGENT_HOME}/{INCIDENT_FILE}:ro"),
            format!("{directory}/{PERMISSIONS_FILE}:{AGENT_HOME}/{PERMISSIONS_FILE}:ro"),
            format!("{directory}/{PROMPT_FILE}:{AGENT_HOME}/prompt.md:ro"),
            format!("{directory}/{CONTEXT_DIR}:{AGENT_HOME}/{CONTEXT_DIR}:ro"),
            format!("{directory}/{OUTPUT_DIR}:{AGENT_HOME}/{OUTPUT_DIR}:rw"),
            format!("{directory}/{LOGS_DIR}:{AGENT_HOME}/{LOGS_DIR}:rw"),
        ]
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Keeps only the last path component and harmless characters, so a plugin cannot write outside
/// `context/`.
fn safe_context_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "-_.".contains(character) {
                character
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "context".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// The prompt-sent.md text: the §4.2 audit header, the prompt, and the preloaded context in the
/// original tags. It is what the agent reads as `/home/agent/prompt.md`.
fn compose_prompt(contents: &WorkspaceContents<'_>, incident_json: &str) -> String {
    let profile = contents.profile;
    let mut prompt = format!(
        "# Prompt Sent to Agent\n\n## Metadata\n- Timestamp: {}\n- Incident ID: {}\n- Cluster: {}\n- Agent CLI: {}\n- Model: {}\n\n## System Prompt\n\n{}\n\n## Additional Prompt\n\n{}\n\n## Preloaded Context\n\n",
        contents
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        contents.incident.incident_id,
        contents.incident.cluster,
        profile.cli,
        profile.model,
        if contents.system_prompt.trim().is_empty() {
            "*No system prompt configured*"
        } else {
            contents.system_prompt
        },
        contents
            .additional_prompt
            .filter(|text| !text.trim().is_empty())
            .unwrap_or("*None provided*"),
    );
    prompt.push_str(&format!("<incident>\n{incident_json}\n</incident>\n\n"));
    prompt.push_str(&format!(
        "<kubernetes_cluster_access_permissions>\n{}\n</kubernetes_cluster_access_permissions>\n\n",
        contents.permissions_json
    ));
    for (name, bytes) in contents.context_files {
        let file = safe_context_name(name);
        match std::str::from_utf8(bytes) {
            Ok(text) if bytes.len() <= INLINE_CONTEXT_LIMIT => prompt.push_str(&format!(
                "<initial_triage_report source=\"{CONTEXT_DIR}/{file}\">\n{text}\n</initial_triage_report>\n\n"
            )),
            _ => prompt.push_str(&format!(
                "<initial_triage_report source=\"{CONTEXT_DIR}/{file}\">\n({} bytes; read {AGENT_HOME}/{CONTEXT_DIR}/{file})\n</initial_triage_report>\n\n",
                bytes.len()
            )),
        }
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::AgentProfile;

    fn input() -> IncidentInput {
        IncidentInput {
            incident_id: "inc-1".into(),
            fault_id: "f1".into(),
            created_at: chrono::DateTime::parse_from_rfc3339("2025-12-20T10:30:00+01:00").unwrap(),
            cluster: "prod-eu".into(),
            namespace: "default".into(),
            resource: serde_json::json!({"kind": "Pod", "name": "web-1"}),
            fault_type: "CrashLoop".into(),
            severity: "critical".into(),
            context: "back-off".into(),
            timestamp: "2025-12-20T10:29:55Z".into(),
        }
    }

    #[test]
    fn workspace_has_the_original_layout_and_safe_modes() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path(), "inc-1").unwrap();
        let profile = AgentProfile::built_in("claude").unwrap();
        let incident = input();
        let context = vec![
            ("../../etc/passwd".to_owned(), b"evil".to_vec()),
            ("dedupe.txt".to_owned(), b"seen 3 times".to_vec()),
        ];
        workspace
            .create(&WorkspaceContents {
                incident: &incident,
                permissions_json: "{\"status\": \"unknown\"}".into(),
                context_files: &context,
                system_prompt: "You are a triage agent.",
                additional_prompt: None,
                profile: &profile,
                started_at: Utc::now(),
            })
            .unwrap();
        let directory = workspace.directory();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(directory), 0o700);
        assert_eq!(mode(&directory.join(INCIDENT_FILE)), 0o644);
        assert!(directory.join("context/passwd").exists());
        assert!(!root.path().join("etc").exists());
        let prompt = fs::read_to_string(directory.join(PROMPT_FILE)).unwrap();
        assert!(prompt.starts_with("# Prompt Sent to Agent"));
        assert!(prompt.contains("You are a triage agent."));
        assert!(prompt.contains("*None provided*"));
        assert!(prompt.contains("<incident>\n{"));
        assert!(prompt.contains("seen 3 times"));
        let document = workspace.read_document().unwrap();
        assert_eq!(document.status, "investigating");
        assert!(document.started_at.is_some());
        if fs::metadata(directory).unwrap().uid() == 0 {
            let output = fs::metadata(workspace.output_dir()).unwrap();
            assert_eq!((output.uid(), output.gid()), (1000, 1000));
            assert_eq!(mode(&workspace.logs_dir()), 0o1770);
            assert_eq!(fs::metadata(workspace.logs_dir()).unwrap().gid(), 1000);
        }
        for path in workspace.log_paths().as_map().values() {
            assert_eq!(mode(Path::new(path)), 0o644);
        }
    }

    #[test]
    fn binds_mount_inputs_read_only_and_only_output_and_logs_writable() {
        let workspace = Workspace::open(Path::new("/srv/ws"), "inc-1").unwrap();
        let binds = workspace.binds();
        let writable: Vec<_> = binds.iter().filter(|bind| bind.ends_with(":rw")).collect();
        assert_eq!(
            writable,
            [
                "/srv/ws/inc-1/output:/home/agent/output:rw",
                "/srv/ws/inc-1/logs:/home/agent/logs:rw"
            ]
        );
        assert!(
            binds
                .iter()
                .all(|bind| bind.ends_with(":ro") || bind.ends_with(":rw"))
        );
    }

    #[test]
    fn credentials_are_staged_readable_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path(), "inc-2").unwrap();
        fs::create_dir_all(workspace.directory()).unwrap();
        let kubeconfig = root.path().join("kubeconfig");
        fs::write(&kubeconfig, "apiVersion: v1").unwrap();
        set_mode(&kubeconfig, 0o600).unwrap();
        let token = root.path().join("token");
        fs::write(&token, "t0ken").unwrap();
        let files = [crate::profile::SecretFileConfig {
            host_path: token,
            name: "token".into(),
        }];
        let binds = workspace
            .stage_credentials(Some(&kubeconfig), &files)
            .unwrap();
        let staged = workspace.directory().join(".credentials/kubeconfig");
        assert_eq!(
            binds[0],
            format!("{}:/home/agent/.kube/config:ro", staged.display())
        );
        assert!(binds[1].ends_with("/.credentials/secrets/token:/run/secrets/token:ro"));
        assert_eq!(
            fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
            0o644
        );
        workspace.remove_credentials().unwrap();
        assert!(!staged.exists());
        let missing = workspace.stage_credentials(Some(Path::new("/nonexistent/kube")), &[]);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/kube")
        );
    }
}
