//! The usage writer: requests hand their rows to a bounded queue without waiting, and one
//! thread writes them in batches, one transaction per batch, on its own connection.
//!
//! Stopping drains every row queued before the stop, so a clean shutdown loses none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::server::error::error_chain;
use crate::store::{Store, UsageRecord};

/// Rows the queue holds before new ones are dropped; about 20 seconds of a busy server.
const QUEUE_CAPACITY: usize = 65_536;

/// Most rows written in one transaction.
const MAX_BATCH: usize = 1024;

/// How long the writer lets rows pile up after the first one, so that a busy server commits
/// a few large batches instead of many small ones.
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

enum Message {
    Row(Box<UsageRecord>),
    Stop(oneshot::Sender<()>),
}

/// Hands usage rows to the writer thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Row(_) => f.write_str("Row"),
            Message::Stop(_) => f.write_str("Stop"),
        }
    }
}

impl Recorder {
    /// Start the writer thread on `store`, a connection of its own.
    pub fn start(store: Store) -> std::io::Result<(Recorder, JoinHandle<()>)> {
        let (queue, inbox) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("archestra-proxy-usage".into())
            .spawn(move || write_rows(&store, inbox))?;
        let recorder = Recorder {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        Ok((recorder, thread))
    }

    /// Queue a row without waiting; a full queue drops it and says so in the log.
    pub fn record(&self, record: UsageRecord) {
        if self.queue.try_send(Message::Row(Box::new(record))).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Every power of two, so a flood of drops makes a handful of lines.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the usage log cannot keep up or has stopped; rows were dropped"
                );
            }
        }
    }

    /// Write every row queued so far, then stop the writer; rows queued later are dropped.
    pub async fn stop(&self) {
        let (done, on_done) = oneshot::channel();
        if self.queue.send(Message::Stop(done)).await.is_ok() {
            let _ = on_done.await;
        }
    }
}

/// Write rows as they come, batching whatever has piled up, until told to stop.
fn write_rows(store: &Store, mut inbox: mpsc::Receiver<Message>) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = inbox.blocking_recv() {
        let mut stop = None;
        match first {
            Message::Row(row) => {
                batch.push(*row);
                std::thread::sleep(LINGER);
            }
            Message::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(Message::Row(row)) => batch.push(*row),
                Ok(Message::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            if let Err(err) = store.insert_usage(&batch) {
                tracing::error!(rows = batch.len(), error = %error_chain(&err), "could not write usage rows");
            }
            batch.clear();
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}
