//! The report store: where report pages and their files are kept, through `object_store` — a
//! local folder (the default, `<data_dir>/reports`), or an `s3://`, `az://` (also `azure://`,
//! `abfs://`) or `gs://` URL whose credentials come from the provider's standard environment
//! variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`), never from the config file.
//!
//! Layout, one folder per incident: `<incident-id>/investigation.md`, `investigation.html`,
//! `incident.json`, and `artifacts/…` (the workspace files kept with a report, by their
//! workspace names: `prompt-sent.md`, `incident_cluster_permissions.json`, `logs/…`,
//! `output/…`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use uuid::Uuid;

/// Where the report store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A folder on this machine.
    Local(PathBuf),
    /// A bucket or container, with an optional prefix (`s3://bucket/prefix`).
    Url(url::Url),
}

impl StoreLocation {
    /// Reads `reports.store`: a URL with a known scheme, a `file://` URL, or a path.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            bail!("reports.store is empty");
        }
        let Ok(url) = url::Url::parse(text) else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        match ObjectStoreScheme::parse(&url) {
            Ok((ObjectStoreScheme::Local, _)) => match url.to_file_path() {
                Ok(path) => Ok(Self::Local(path)),
                Err(()) => bail!("reports.store: {text} is not a local path"),
            },
            Ok((
                ObjectStoreScheme::AmazonS3
                | ObjectStoreScheme::MicrosoftAzure
                | ObjectStoreScheme::GoogleCloudStorage,
                _,
            )) if matches!(
                url.scheme(),
                "s3" | "s3a" | "az" | "azure" | "abfs" | "abfss" | "gs"
            ) =>
            {
                if url.host_str().is_none_or(str::is_empty) {
                    bail!("reports.store: {text} names no bucket or container");
                }
                Ok(Self::Url(url))
            }
            // a Windows drive letter parses as a scheme; anything else is a mistake
            _ if url.scheme().len() == 1 => Ok(Self::Local(PathBuf::from(text))),
            _ => bail!("reports.store: {text} is not a folder or an s3://, az:// or gs:// URL"),
        }
    }

    /// Checks one `[reports.options]` key against the store's kind; credentials are refused
    /// (they belong in the environment).
    pub fn check_option(&self, key: &str) -> anyhow::Result<()> {
        let Self::Url(url) = self else {
            bail!("reports.options.{key}: a local report store takes no options");
        };
        let lower = key.to_ascii_lowercase();
        if [
            "secret",
            "token",
            "password",
            "access_key",
            "account_key",
            "sas_key",
            "service_account_key",
            "client_id",
        ]
        .iter()
        .any(|word| lower.contains(word))
        {
            bail!(
                "reports.options.{key}: credentials are read from the environment (the provider's standard variables), not from the config file"
            );
        }
        let known = match url.scheme() {
            "s3" | "s3a" => lower.parse::<AmazonS3ConfigKey>().is_ok(),
            "gs" => lower.parse::<GoogleConfigKey>().is_ok(),
            _ => lower.parse::<AzureConfigKey>().is_ok(),
        };
        if !known {
            bail!(
                "reports.options.{key} is not an option of a {} store",
                url.scheme()
            );
        }
        Ok(())
    }
}

/// Bounds on one request to a remote store; the report's own retry (with backoff, for as long
/// as it takes) is the upload loop's.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open report store.
#[derive(Clone, Debug)]
pub struct ReportStore {
    objects: Arc<dyn ObjectStore>,
    /// The store's root as a URL, without credentials.
    root: String,
    kind: &'static str,
}

impl ReportStore {
    /// Opens the store at `location` with `options`, taking credentials from `env` (the
    /// process environment in `serve`). A local folder is created if missing.
    pub fn open(
        location: &StoreLocation,
        options: &std::collections::BTreeMap<String, String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let url = match location {
            StoreLocation::Local(path) => return Self::open_local(path),
            StoreLocation::Url(url) => url,
        };
        let (scheme, prefix) = ObjectStoreScheme::parse(url)
            .with_context(|| format!("reports.store: cannot use {url}"))?;
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: REQUEST_TIMEOUT,
            ..RetryConfig::default()
        };
        let client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let env: Vec<(String, String)> = env.into_iter().collect();
        let from_env = |prefix: &str| -> Vec<(String, String)> {
            env.iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()))
                .collect()
        };
        let options = options
            .iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()));
        let (store, kind): (Arc<dyn ObjectStore>, _) = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = AmazonS3Builder::new()
                    .with_retry(retry)
                    .with_client_options(client);
                for (key, value) in from_env("AWS_").into_iter().chain(options) {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                let store = builder
                    .with_url(url.as_str())
                    .build()
                    .context("reports.store: cannot open the S3 bucket")?;
                (Arc::new(store), "s3")
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut builder = MicrosoftAzureBuilder::new()
                    .with_retry(retry)
                    .with_client_options(client);
                for (key, value) in from_env("AZURE_").into_iter().chain(options) {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                let store = builder
                    .with_url(url.as_str())
                    .build()
                    .context("reports.store: cannot open the Azure container")?;
                (Arc::new(store), "azure")
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut builder = GoogleCloudStorageBuilder::new()
                    .with_retry(retry)
                    .with_client_options(client);
                for (key, value) in from_env("GOOGLE_").into_iter().chain(options) {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                let store = builder
                    .with_url(url.as_str())
                    .build()
                    .context("reports.store: cannot open the GCS bucket")?;
                (Arc::new(store), "gcs")
            }
            _ => bail!("reports.store: {url} is not an s3://, az:// or gs:// URL"),
        };
        let objects: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        let mut root = url.clone();
        root.set_query(None);
        root.set_fragment(None);
        let _ = root.set_password(None);
        let _ = root.set_username("");
        let mut root = root.to_string();
        if !root.ends_with('/') {
            root.push('/');
        }
        Ok(Self {
            objects,
            root,
            kind,
        })
    }

    fn open_local(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("reports.store: cannot create {}", path.display()))?;
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("reports.store: cannot read {}", path.display()))?;
        let objects = LocalFileSystem::new_with_prefix(&path)
            .with_context(|| format!("reports.store: cannot use {}", path.display()))?;
        let root = url::Url::from_directory_path(&path)
            .map(|url| url.to_string())
            .unwrap_or_else(|()| format!("file://{}/", path.display()));
        Ok(Self {
            objects: Arc::new(objects),
            root,
            kind: "filesystem",
        })
    }

    /// `filesystem`, `s3`, `azure` or `gcs` (the `storage_type` of the reports kept here).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The URL of incident `id`'s folder.
    pub fn folder_uri(&self, id: Uuid) -> String {
        format!("{}{id}/", self.root)
    }

    /// Writes `name` (a `/`-separated path) in incident `id`'s folder, replacing what was there.
    pub async fn put(&self, id: Uuid, name: &str, bytes: Bytes) -> Result<(), object_store::Error> {
        self.objects
            .put(&object_path(id, name), bytes.into())
            .await
            .map(|_| ())
    }

    /// Reads `name` from incident `id`'s folder.
    pub async fn get(&self, id: Uuid, name: &str) -> Result<Bytes, object_store::Error> {
        self.objects
            .get(&object_path(id, name))
            .await?
            .bytes()
            .await
    }

    /// Deletes incident `id`'s folder and everything in it; returns how many objects went.
    pub async fn delete_folder(&self, id: Uuid) -> Result<usize, object_store::Error> {
        let prefix = ObjectPath::from(id.to_string());
        let found: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        let mut deleted = 0;
        for meta in found {
            match self.objects.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }
}

fn object_path(id: Uuid, name: &str) -> ObjectPath {
    let mut path = ObjectPath::from(id.to_string());
    for part in name
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
    {
        path = path.join(part);
    }
    path
}

/// An error of the store as it may be logged and stored: query strings (which carry SAS
/// signatures on Azure) are cut from any URL in it.
pub fn describe(error: &object_store::Error) -> String {
    let text = error.to_string();
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if in_query {
            if c.is_whitespace() || c == ')' || c == '"' || c == '\'' {
                in_query = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' {
            in_query = true;
            out.push_str("?…");
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_paths_or_known_urls() {
        assert_eq!(
            StoreLocation::parse("./reports").unwrap(),
            StoreLocation::Local("./reports".into())
        );
        assert_eq!(
            StoreLocation::parse("file:///var/lib/nc/reports").unwrap(),
            StoreLocation::Local("/var/lib/nc/reports".into())
        );
        for url in ["s3://bucket/prefix", "az://container/p", "gs://bucket"] {
            assert!(
                matches!(StoreLocation::parse(url).unwrap(), StoreLocation::Url(_)),
                "{url}"
            );
        }
        let error = StoreLocation::parse("ftp://host/x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("reports.store"), "{error}");
        let s3 = StoreLocation::parse("s3://bucket").unwrap();
        assert!(s3.check_option("aws_region").is_ok());
        assert!(s3.check_option("aws_endpoint").is_ok());
        let error = s3
            .check_option("aws_secret_access_key")
            .unwrap_err()
            .to_string();
        assert!(error.contains("environment"), "{error}");
        let error = s3.check_option("aws_regoin").unwrap_err().to_string();
        assert!(error.contains("reports.options.aws_regoin"), "{error}");
    }

    #[test]
    fn object_names_stay_in_the_incident_folder() {
        let id = Uuid::nil();
        assert_eq!(
            object_path(id, "../../etc/artifacts/logs/a.log").as_ref(),
            "00000000-0000-0000-0000-000000000000/etc/artifacts/logs/a.log"
        );
    }

    #[test]
    fn described_errors_lose_query_strings() {
        let error = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "error sending request for url (https://a.blob.core.windows.net/c/x?sv=1&sig=SECRET)".into(),
        };
        let text = describe(&error);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("a.blob.core.windows.net/c/x?…)"), "{text}");
    }

    #[tokio::test]
    async fn a_local_store_keeps_files_by_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open(
            &StoreLocation::Local(dir.path().join("reports")),
            &Default::default(),
            Vec::new(),
        )
        .unwrap();
        let id = Uuid::new_v4();
        store
            .put(id, "investigation.md", Bytes::from_static(b"# x"))
            .await
            .unwrap();
        store
            .put(
                id,
                "artifacts/logs/agent-full.log",
                Bytes::from_static(b"log"),
            )
            .await
            .unwrap();
        assert!(
            dir.path()
                .join("reports")
                .join(id.to_string())
                .join("investigation.md")
                .is_file()
        );
        assert_eq!(
            store.get(id, "investigation.md").await.unwrap(),
            Bytes::from_static(b"# x")
        );
        assert!(store.folder_uri(id).starts_with("file:///"));
        assert_eq!(store.delete_folder(id).await.unwrap(), 2);
        assert!(store.get(id, "investigation.md").await.is_err());
    }
}
