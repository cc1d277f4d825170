//! Who is looking at the web UI: browser sessions made by the login form, kept in memory, and the
//! per-session token that every form which changes something must send back (CSRF).
//!
//! A session id is 244 random bits, handed to the browser once in an `HttpOnly`,
//! `SameSite=Strict` cookie; the map is keyed by its SHA-256, so neither a lookup's timing nor a
//! memory dump gives a usable id. The CSRF token is compared in constant time. Sessions live for
//! [`SESSION_TTL`] and end with `serve` (a restart means logging in again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use nightcrier_intake::Secret;
use sha2::{Digest, Sha256};

/// How long a login lasts.
pub(super) const SESSION_TTL: Duration = Duration::hours(12);
/// The cookie holding the session id.
pub(super) const COOKIE: &str = "nightcrier_session";
/// More live sessions than this and the oldest are dropped (each one needed a valid token).
const MAX_SESSIONS: usize = 10_000;

/// What a viewer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Grant {
    /// Look.
    Read,
    /// Look and act (retry).
    Admin,
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

#[derive(Clone, Debug)]
struct Session {
    grant: Grant,
    csrf: String,
    expires_at: DateTime<Utc>,
}

/// The live sessions, plus the CSRF token of an open UI (loopback without tokens), where there is
/// no login but a cross-site page must still not be able to press retry.
#[derive(Clone, Debug)]
pub(super) struct Sessions {
    live: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    open_csrf: Arc<str>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            live: Arc::default(),
            open_csrf: Arc::from(random_token()),
        }
    }
}

/// 244 random bits as 64 hex digits (two v4 UUIDs, from the OS's random source).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn key(session_id: &str) -> [u8; 32] {
    Sha256::digest(session_id.as_bytes()).into()
}

impl Sessions {
    /// The viewer of an open UI: everyone is admin, forms carry the process's token.
    pub(super) fn open_viewer(&self) -> Viewer {
        Viewer {
            grant: Grant::Admin,
            csrf: self.open_csrf.to_string(),
            logged_in: false,
        }
    }

    /// Starts a session with `grant`; returns its id (for the cookie).
    pub(super) fn start(&self, grant: Grant, now: DateTime<Utc>) -> String {
        let id = random_token();
        let session = Session {
            grant,
            csrf: random_token(),
            expires_at: now + SESSION_TTL,
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        live.retain(|_, session| session.expires_at > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires_at)
                .map(|(key, _)| *key)
        {
            live.remove(&oldest);
        }
        live.insert(key(&id), session);
        id
    }

    /// The viewer holding session `id`, if it is live.
    pub(super) fn viewer(&self, id: &str, now: DateTime<Utc>) -> Option<Viewer> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        live.get(&key(id))
            .filter(|session| session.expires_at > now)
            .map(|session| Viewer {
                grant: session.grant,
                csrf: session.csrf.clone(),
                logged_in: true,
            })
    }

    /// Ends session `id`.
    pub(super) fn end(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&key(id));
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

    #[test]
    fn a_session_lives_until_it_ends_or_expires() {
        let sessions = Sessions::default();
        let now = Utc::now();
        let id = sessions.start(Grant::Read, now);
        let viewer = sessions.viewer(&id, now).unwrap();
        assert_eq!(viewer.grant, Grant::Read);
        assert!(viewer.csrf_matches(Some(&viewer.csrf)));
        assert!(!viewer.csrf_matches(Some("guess")));
        assert!(!viewer.csrf_matches(None));
        assert!(sessions.viewer("other", now).is_none());
        assert!(sessions.viewer(&id, now + SESSION_TTL).is_none());
        sessions.end(&id);
        assert!(sessions.viewer(&id, now).is_none());
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
