//! HTTP endpoints: `/metrics` and `/health` (seed compatible), `/plugins`
//! and a JSON status page at `/`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::controllers::Supervisor;
use crate::metrics::Metrics;
use crate::runtime::PluginRegistry;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<PluginRegistry>,
    pub supervisor: Arc<Supervisor>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/plugins", get(plugins))
        .route("/", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn plugins(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.plugins.statuses())
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "clusters": state.supervisor.views(),
        "plugins": state.plugins.statuses(),
        "configErrors": state.supervisor.errors(),
    }))
}
