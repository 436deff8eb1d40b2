//! The upstream's answer body on its way downstream: each chunk is handed on as it arrives,
//! and a side look at it feeds the usage row, which is queued when the body ends or is
//! dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::recorder::Recorder;
use super::usage::UsageScanner;
use crate::store::{Outcome, UsageRecord};

/// What goes upstream: the downstream body, streamed as it arrives.
pub type RequestBody = axum::body::Body;

/// Measures one answer and queues its usage row.
#[derive(Debug)]
pub struct Meter {
    /// The row so far; timing, usage and outcome are filled in at the end.
    pub record: UsageRecord,
    /// When the request arrived.
    pub started: Instant,
    pub scanner: Option<UsageScanner>,
    pub recorder: Recorder,
}

impl Meter {
    fn first_byte(&mut self) {
        if self.record.ttfb_us.is_none() {
            self.record.ttfb_us = Some(micros(self.started));
        }
    }

    fn finish(mut self, outcome: Outcome) {
        if let Some(scanner) = self.scanner.take() {
            let reply = scanner.finish();
            self.record.model = reply.model;
            self.record.usage = reply.usage;
        }
        self.record.latency_us = micros(self.started);
        self.record.outcome = outcome;
        self.recorder.record(self.record);
    }
}

/// Return the microseconds since `started`.
pub fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The upstream's answer body, metered on its way through.
#[derive(Debug)]
pub struct MeteredBody {
    upstream: Incoming,
    /// `None` once the row is queued.
    meter: Option<Meter>,
}

impl MeteredBody {
    /// Meter `upstream` with `meter`.
    pub fn new(upstream: Incoming, meter: Meter) -> MeteredBody {
        MeteredBody {
            upstream,
            meter: Some(meter),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(meter) = self.meter.take() {
            meter.finish(outcome);
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.upstream).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(meter)) = (frame.data_ref(), this.meter.as_mut()) {
                    meter.first_byte();
                    if let Some(scanner) = meter.scanner.as_mut() {
                        scanner.feed(data);
                    }
                }
                // The server may stop polling once the body says it has ended.
                if this.upstream.is_end_stream() {
                    this.finish(Outcome::Completed);
                }
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::warn!(error = %err, "the upstream broke off its answer");
                this.finish(Outcome::UpstreamBroken);
            }
            Poll::Ready(None) => this.finish(Outcome::Completed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.upstream.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropping `upstream` after this closes its connection, which cancels the upstream
        // request when the downstream client went away early.
        let outcome = if self.upstream.is_end_stream() {
            Outcome::Completed
        } else {
            Outcome::ClientGone
        };
        self.finish(outcome);
    }
}
