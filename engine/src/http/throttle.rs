//! Guessing tokens is slowed down: a client address that fails authentication (any `401`: a
//! wrong API token, a wrong webhook token, a refused web UI login) `limit` times within a minute
//! is answered `429 Too Many Requests` with `Retry-After` for the rest of that minute, without
//! its request reaching a handler. Counted per address as the listener sees it: behind a proxy
//! every client shares the proxy's address, so a lockout there holds every client back for at
//! most a minute (`http.auth_failures_per_minute = 0` turns it off).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, windows that ended are dropped, and a new address is
/// not tracked while every slot holds a live window.
const MAX_ADDRESSES: usize = 10_000;

/// Failed authentications per client address.
#[derive(Debug)]
pub(super) struct AuthThrottle {
    limit: u32,
    seen: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AuthThrottle {
    /// Refuses an address after `limit` failures in a minute; `0` never refuses.
    pub(super) fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must still wait, if it is locked out at `now`.
    fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let window = seen.get(&ip)?;
        let ends = window.started + WINDOW;
        (window.failures >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts a failure of `ip` at `now`; true when it is the one that locks the address out.
    fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains_key(&ip) && seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, window| now < window.started + WINDOW);
            if seen.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let window = seen.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= window.started + WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
        window.failures == self.limit
    }
}

/// The middleware in front of every route.
pub(super) async fn throttle(
    State(throttle): State<Arc<AuthThrottle>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ip) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
    else {
        return next.run(request).await;
    };
    if let Some(wait) = throttle.locked(ip, Instant::now()) {
        metrics::counter!("nightcrier_http_throttled_total").increment(1);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "error": "too many failed authentications from this address; try again later"
            })),
        )
            .into_response();
        let seconds = wait.as_secs().max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED && throttle.failed(ip, Instant::now()) {
        metrics::counter!("nightcrier_http_auth_lockouts_total").increment(1);
        tracing::warn!(client = %ip, limit = throttle.limit, "too many failed authentications: refusing this address for the rest of the minute");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_limit_until_the_minute_is_over() {
        let throttle = AuthThrottle::new(3);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        assert!(!throttle.failed(ip, start));
        assert!(!throttle.failed(ip, start));
        assert_eq!(throttle.locked(ip, start), None);
        assert!(throttle.failed(ip, start + Duration::from_secs(1)));
        assert_eq!(
            throttle.locked(ip, start + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            throttle.locked(other, start),
            None,
            "others are not held back"
        );
        assert_eq!(throttle.locked(ip, start + WINDOW), None, "a new minute");
        assert!(
            !throttle.failed(ip, start + WINDOW),
            "counting starts afresh"
        );
    }

    #[test]
    fn zero_never_refuses() {
        let throttle = AuthThrottle::new(0);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!throttle.failed(ip, now));
        }
        assert_eq!(throttle.locked(ip, now), None);
    }
}
