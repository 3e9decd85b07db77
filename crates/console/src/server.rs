//! The console's HTTP routes: the page and its files, `/api/overview`, and `/login`. Every
//! route but `/login` needs the daemon's token; nothing here changes anything.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shardvault_store::Store;

use crate::{assets, auth, view};

#[derive(Clone)]
struct Console {
    store: Arc<Store>,
    token: Arc<str>,
}

/// The console's routes over `store`, open to holders of `token`.
pub fn router(store: Arc<Store>, token: Arc<str>) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/api/overview", get(overview))
        .fallback(get(asset))
        .with_state(Console { store, token })
}

fn allowed(c: &Console, headers: &HeaderMap) -> bool {
    auth::presented(headers).is_some_and(|t| auth::same_token(t, &c.token))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The shardvault console needs the daemon's token: open the address `shardvault console` prints.\n",
    )
        .into_response()
}

async fn login(State(c): State<Console>, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("token") {
        Some(t) if auth::same_token(t, &c.token) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, auth::login_cookie(&c.token)),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        _ => unauthorized(),
    }
}

async fn overview(State(c): State<Console>, headers: HeaderMap) -> Response {
    if !allowed(&c, &headers) {
        return unauthorized();
    }
    let store = c.store.clone();
    match tokio::task::spawn_blocking(move || view::overview(&store)).await {
        Ok(Ok(o)) => axum::Json(o).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn asset(State(c): State<Console>, req: Request) -> Response {
    if !allowed(&c, req.headers()) {
        return unauthorized();
    }
    match assets::find(req.uri().path()) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
    }
}
