//! Who is looking at the web UI: browser sessions made by the login form, and the per-session
//! token that every form which changes something must send back (CSRF).
//!
//! A session id is 244 random bits, handed to the browser once in an `HttpOnly`,
//! `SameSite=Strict` cookie. The database keeps only its SHA-256 with what the login may do and
//! when it ends (`ui_sessions`), so every replica behind a load balancer knows the login, a
//! restart keeps it, and neither a lookup's timing nor a database dump gives a usable id. The
//! CSRF token is derived from the id (another SHA-256), so it needs no storage and a cross-site
//! page, which can read neither, cannot forge it; it is compared in constant time. Sessions live
//! for [`SESSION_TTL`]; logging out deletes the row.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nightcrier_intake::Secret;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// How long a login lasts.
pub(super) const SESSION_TTL: Duration = Duration::hours(12);
/// The cookie holding the session id.
pub(super) const COOKIE: &str = "nightcrier_session";

/// What a viewer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Grant {
    /// Look.
    Read,
    /// Look and act (retry).
    Admin,
}

impl Grant {
    fn as_str(self) -> &'static str {
        match self {
            Grant::Read => "read",
            Grant::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Grant::Read),
            "admin" => Some(Grant::Admin),
            _ => None,
        }
    }
}

/// The viewer of one request, as the middleware found it.
#[derive(Clone, Debug)]
pub(super) struct Viewer {
    /// What they may do.
    pub(super) grant: Grant,
    /// The token their forms carry.
    pub(super) csrf: String,
    /// Whether they logged in (and so may log out).
    pub(super) logged_in: bool,
}

/// The logins (in the store), plus the CSRF token of an open UI (loopback without tokens),
/// where there is no login but a cross-site page must still not be able to press retry.
#[derive(Clone, Debug)]
pub(super) struct Sessions {
    store: Store,
    open_csrf: Arc<str>,
}

/// 244 random bits as 64 hex digits (two v4 UUIDs, from the OS's random source).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn hex_sha256(parts: &[&str]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The key of session `id` in the store.
fn key(id: &str) -> String {
    hex_sha256(&["nightcrier-ui-session:", id])
}

/// The CSRF token of session `id`.
fn csrf_of(id: &str) -> String {
    hex_sha256(&["nightcrier-ui-csrf:", id])
}

impl Sessions {
    /// The logins kept in `store`.
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            open_csrf: Arc::from(random_token()),
        }
    }

    /// The viewer of an open UI: everyone is admin, forms carry the process's token.
    pub(super) fn open_viewer(&self) -> Viewer {
        Viewer {
            grant: Grant::Admin,
            csrf: self.open_csrf.to_string(),
            logged_in: false,
        }
    }

    /// Starts a session with `grant`; returns its id (for the cookie).
    pub(super) async fn start(
        &self,
        grant: Grant,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = random_token();
        self.store
            .insert_ui_session(&key(&id), grant.as_str(), now, now + SESSION_TTL)
            .await?;
        Ok(id)
    }

    /// The viewer holding session `id`, if it is live. A store that cannot answer is logged and
    /// counts as no session (the viewer is sent to the login form, which says what failed).
    pub(super) async fn viewer(&self, id: &str, now: DateTime<Utc>) -> Option<Viewer> {
        match self.store.ui_session(&key(id), now).await {
            Ok(found) => found.as_deref().and_then(Grant::parse).map(|grant| Viewer {
                grant,
                csrf: csrf_of(id),
                logged_in: true,
            }),
            Err(error) => {
                tracing::warn!(error = %error, "looking up a web UI session failed");
                None
            }
        }
    }

    /// Ends session `id`.
    pub(super) async fn end(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete_ui_session(&key(id)).await
    }
}

impl Viewer {
    /// Whether `presented` is this viewer's CSRF token (constant time).
    pub(super) fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|presented| {
            !presented.is_empty() && Secret::new(self.csrf.clone()).matches(presented.as_bytes())
        })
    }
}

/// The session id in a `Cookie` header, if any.
pub(super) fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_lives_until_it_ends_or_expires() {
        let store = Store::connect(&crate::store::StoreConfig::new("sqlite::memory:"))
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        let sessions = Sessions::new(store.clone());
        let now = Utc::now();
        let id = sessions.start(Grant::Read, now).await.unwrap();
        let viewer = sessions.viewer(&id, now).await.unwrap();
        assert_eq!(viewer.grant, Grant::Read);
        assert!(viewer.csrf_matches(Some(&viewer.csrf)));
        assert!(!viewer.csrf_matches(Some("guess")));
        assert!(!viewer.csrf_matches(None));
        assert_ne!(viewer.csrf, id, "the CSRF token is not the session id");
        assert!(sessions.viewer("other", now).await.is_none());
        assert!(sessions.viewer(&id, now + SESSION_TTL).await.is_none());
        // another replica (another Sessions on the same database) knows the login
        let elsewhere = Sessions::new(store);
        assert_eq!(elsewhere.viewer(&id, now).await.unwrap().csrf, viewer.csrf);
        sessions.end(&id).await.unwrap();
        assert!(elsewhere.viewer(&id, now).await.is_none());
        assert_ne!(sessions.open_viewer().csrf, viewer.csrf);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(
            session_cookie("a=1; nightcrier_session=abc; b=2"),
            Some("abc")
        );
        assert_eq!(session_cookie("nightcrier_sessionx=abc"), None);
    }
}
