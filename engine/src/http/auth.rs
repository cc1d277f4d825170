//! Who may use the API: a read token for everything that only looks, an admin token for what
//! changes something (`POST …/retry`); either as `Authorization: Bearer <token>`, compared in
//! constant time, never logged. Without tokens (allowed only on loopback) everyone may.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nightcrier_intake::Secret;

use super::HttpContext;

/// The API tokens (`[http] read_token_*`, `admin_token_*`).
#[derive(Clone, Debug, Default)]
pub struct ApiTokens {
    /// Grants reading.
    pub read: Option<Secret>,
    /// Grants reading and acting.
    pub admin: Option<Secret>,
    /// Failed authentications a client address may make in a minute before it is refused for
    /// the rest of it (`http.auth_failures_per_minute`; 0: never refused).
    pub failures_per_minute: u32,
}

/// The default of `http.auth_failures_per_minute`.
pub const AUTH_FAILURES_PER_MINUTE: u32 = 10;

impl ApiTokens {
    /// Whether no token is configured (then the API is open, which only loopback allows).
    pub fn is_empty(&self) -> bool {
        self.read.is_none() && self.admin.is_none()
    }
}

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Grant {
    None,
    Read,
    Admin,
}

pub(super) fn grant_of(tokens: &ApiTokens, presented: Option<&[u8]>) -> Grant {
    let Some(presented) = presented else {
        return Grant::None;
    };
    if tokens.admin.as_ref().is_some_and(|t| t.matches(presented)) {
        Grant::Admin
    } else if tokens.read.as_ref().is_some_and(|t| t.matches(presented)) {
        Grant::Read
    } else {
        Grant::None
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": reason }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The middleware in front of the API and the metrics.
pub(super) async fn require_token(
    State(cx): State<Arc<HttpContext>>,
    request: Request,
    next: Next,
) -> Response {
    let tokens = &cx.tokens;
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    let needed = match *request.method() {
        Method::GET | Method::HEAD => Grant::Read,
        _ => Grant::Admin,
    };
    match grant_of(tokens, presented) {
        Grant::None => refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token (send Authorization: Bearer <token>)",
        ),
        granted if granted < needed => refuse(
            StatusCode::FORBIDDEN,
            "this needs the admin token (http.admin_token_env or http.admin_token_file)",
        ),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_they_name() {
        let tokens = ApiTokens {
            read: Some(Secret::new("r")),
            admin: Some(Secret::new("a")),
            failures_per_minute: AUTH_FAILURES_PER_MINUTE,
        };
        assert_eq!(grant_of(&tokens, Some(b"r")), Grant::Read);
        assert_eq!(grant_of(&tokens, Some(b"a")), Grant::Admin);
        assert_eq!(grant_of(&tokens, Some(b"x")), Grant::None);
        assert_eq!(grant_of(&tokens, None), Grant::None);
        assert!(Grant::Read < Grant::Admin);
    }
}
