//! The data plane's machinery: the upstream client, the key cache, usage scanning and the
//! usage writer. The route that uses them is `server::forward`.

pub mod body;
pub mod keys;
pub mod recorder;
pub mod upstream;
pub mod usage;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::HeaderValue;
use thiserror::Error;

use crate::config::ServerConfig;
use crate::store::{Store, StoreError};

use keys::KeyCache;
use recorder::Recorder;
use upstream::{UpstreamBase, UpstreamClient, UpstreamError};

/// Why the data plane could not start.
#[derive(Debug, Error)]
pub enum DataPlaneError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the provider key holds characters that cannot go in an HTTP header")]
    ProviderKey,
    #[error("could not open a second connection to the database")]
    Store(#[from] StoreError),
    #[error("could not start the usage writer thread")]
    Thread(#[source] std::io::Error),
}

/// Everything the forwarding route shares.
#[derive(Debug)]
pub struct DataPlane {
    pub client: UpstreamClient,
    pub upstream: UpstreamBase,
    /// How long the upstream may take to send its response headers.
    pub timeout: Duration,
    /// The `x-api-key` value that replaces a standard virtual key.
    pub provider_key: Option<HeaderValue>,
    pub keys: Arc<KeyCache>,
    /// `None` when the usage log is off.
    pub recorder: Option<Recorder>,
    watcher: Arc<Store>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl DataPlane {
    /// Set up the data plane of `config` over `store`; blocks while it opens the database.
    pub fn open(config: &ServerConfig, store: Arc<Store>) -> Result<DataPlane, DataPlaneError> {
        let upstream = UpstreamBase::new(&config.upstream)?;
        let client = upstream::build_client(&config.upstream)?;
        let provider_key = config
            .provider_key
            .as_ref()
            .map(|key| {
                let mut value =
                    HeaderValue::from_str(key.expose()).map_err(|_| DataPlaneError::ProviderKey)?;
                value.set_sensitive(true);
                Ok::<_, DataPlaneError>(value)
            })
            .transpose()?;

        // Separate connections: the watcher must see the others' commits, and the writer's
        // batches must not wait behind the control plane's lock.
        let watcher = Arc::new(Store::open(&config.db_path)?);
        let (recorder, writer) = if config.record_usage {
            let writer = Store::open(&config.db_path)?;
            writer.tune_for_usage_writes()?;
            let (recorder, thread) = Recorder::start(writer).map_err(DataPlaneError::Thread)?;
            (Some(recorder), Some(thread))
        } else {
            (None, None)
        };

        Ok(DataPlane {
            client,
            upstream,
            timeout: config.upstream_timeout,
            provider_key,
            keys: Arc::new(KeyCache::new(store)),
            recorder,
            watcher,
            writer: Mutex::new(writer),
        })
    }

    /// Start looking for key changes made by other processes; stops when the task is aborted.
    pub fn watch_keys(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.keys).watch(Arc::clone(&self.watcher)))
    }

    /// Write every usage row queued so far and stop the writer.
    pub async fn stop(&self) {
        if let Some(recorder) = &self.recorder {
            recorder.stop().await;
        }
        let thread = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The thread has answered the stop, so this join returns at once.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
