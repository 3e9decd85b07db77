//! Bearer tokens: made at start, checked on every request of a listener that needs one.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use rand::RngCore;

/// A fresh random token (256 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// True when the request carries `token` (or no token is required), compared in constant
/// time so that timing does not reveal it.
pub fn authorized(token: Option<&Arc<str>>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
