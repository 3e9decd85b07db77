//! Who may read the console: whoever holds the daemon's token, sent as a bearer token or
//! kept in a cookie set by `/login?token=...`.

use axum::http::{HeaderMap, header};
pub use shardvault_apiserver::auth::same_token;

/// Name of the cookie that holds the token after login.
pub const COOKIE: &str = "shardvault_console";

/// The token a request carries, from `Authorization: Bearer` or the login cookie.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

/// The `Set-Cookie` value that keeps `token` for this site only, out of reach of scripts.
pub fn login_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; shardvault_console=tok"),
        );
        assert_eq!(presented(&h), Some("tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert_eq!(presented(&h), Some("other"));
    }
}
