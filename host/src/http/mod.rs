//! HTTP endpoints: `/metrics` and `/health` (seed compatible), `/plugins`,
//! the status page for people at `/` and the same status as JSON at
//! `/api/status` for scripts.

mod plugins;
mod status_page;

pub use plugins::{ClusterRound, PluginReport, RoundCounts, RoundHealth};

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
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
    pub sources: Option<Arc<crate::oci::source::OciSources>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/plugins", get(plugins))
        .route("/", get(page))
        .route("/api/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Read at scrape time: it changes with every call.
    if let Some(bytes) = state.plugins.runtime().pool_resident_bytes() {
        state.metrics.instance_pool_resident(bytes);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

impl AppState {
    fn plugin_reports(&self, views: &[crate::controllers::ClusterView]) -> Vec<PluginReport> {
        let sources = self.sources.as_ref().map(|s| s.statuses()).unwrap_or_default();
        plugins::reports(self.plugins.statuses(), sources, views)
    }
}

async fn plugins(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.plugin_reports(&state.supervisor.views()))
}

async fn page(State(state): State<AppState>) -> impl IntoResponse {
    let views = state.supervisor.views();
    let markup = status_page::render(
        &views,
        &state.plugin_reports(&views),
        &state.supervisor.errors(),
        &state.metrics,
    );
    Html(markup.into_string())
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    let views = state.supervisor.views();
    Json(json!({
        "plugins": state.plugin_reports(&views),
        "clusters": views,
        "configErrors": state.supervisor.errors(),
    }))
}
