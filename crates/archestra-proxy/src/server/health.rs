//! `GET /v1/health?mcp=<ref>&llm=<ref>`: a verdict on each part the client asks about.
//!
//! `llm` is `ok` whenever this server answers, because the LLM proxy is this process. The
//! companion hosts no MCP gateway, so `mcp` is `ok` only when `--mcp-health-url` is set and
//! that URL answers below 500 within three seconds; the verdict is cached for five seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archestra_wire::{HealthReport, HealthState};
use axum::Json;
use axum::extract::{RawQuery, State};
use tokio::sync::Mutex;

use super::AppState;

/// How long one probe of the MCP gateway may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a probe's verdict is reused, so health checks cannot flood the gateway.
const PROBE_CACHE: Duration = Duration::from_secs(5);

/// Answer the health verdicts that were asked for, and only those.
pub async fn health(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Json<HealthReport> {
    let asked = |name: &str| {
        query
            .as_deref()
            .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(key, _)| key == name))
    };
    let llm = asked("llm").then_some(HealthState::Ok);
    let mcp = if asked("mcp") {
        Some(state.mcp_probe.check().await)
    } else {
        None
    };
    Json(HealthReport { mcp, llm })
}

/// Probes the MCP gateway named by `--mcp-health-url`.
#[derive(Debug)]
pub struct McpProbe {
    target: Option<(String, reqwest::Client)>,
    last: Mutex<Option<(Instant, HealthState)>>,
}

impl McpProbe {
    /// Probe `url`, or report `down` for good when there is none.
    pub fn new(url: Option<String>) -> Result<McpProbe, reqwest::Error> {
        let target = match url {
            Some(url) => {
                let client = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
                Some((url, client))
            }
            None => None,
        };
        Ok(McpProbe {
            target,
            last: Mutex::new(None),
        })
    }

    /// Return the gateway's verdict, probing it at most once per five seconds.
    pub async fn check(&self) -> HealthState {
        let Some((url, client)) = &self.target else {
            return HealthState::Down;
        };
        // Holding the lock across the probe makes concurrent checks share one probe.
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = *last
            && at.elapsed() < PROBE_CACHE
        {
            return verdict;
        }
        let verdict = match client.get(url).send().await {
            Ok(response) if !response.status().is_server_error() => HealthState::Ok,
            Ok(response) => {
                tracing::warn!(
                    status = response.status().as_u16(),
                    "mcp gateway probe failed"
                );
                HealthState::Down
            }
            Err(err) => {
                tracing::warn!(error = %err.without_url(), "mcp gateway probe failed");
                HealthState::Down
            }
        };
        *last = Some((Instant::now(), verdict));
        verdict
    }
}
