//! Token usage read from a side copy of the upstream's answer, as it streams past.
//!
//! A JSON reply is kept (by reference, not copied) and parsed once it ends. An SSE stream is
//! scanned line by line: only the `message_start` and `message_delta` events are copied and
//! parsed, everything else is skipped as it goes by, so a long stream costs no memory.

use bytes::Bytes;
use serde::Deserialize;

use crate::store::TokenUsage;

/// Largest JSON reply whose usage is read; a larger one is forwarded but not parsed.
const MAX_JSON_REPLY: usize = 8 * 1024 * 1024;

/// Longest SSE line kept while it is split across chunks; longer lines are skipped.
const MAX_SSE_LINE: usize = 256 * 1024;

/// What a reply says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyUsage {
    pub model: Option<String>,
    pub usage: TokenUsage,
}

/// Reads usage from an answer body, chunk by chunk.
#[derive(Debug)]
pub enum UsageScanner {
    Json(JsonScan),
    Sse(SseScan),
}

impl UsageScanner {
    /// Pick the scanner for a `Content-Type`; `None` for bodies that carry no usage.
    pub fn for_content_type(content_type: Option<&[u8]>) -> Option<UsageScanner> {
        let essence = content_type?.split(|b| *b == b';').next()?.trim_ascii();
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Some(UsageScanner::Sse(SseScan::default()))
        } else if essence.eq_ignore_ascii_case(b"application/json") {
            Some(UsageScanner::Json(JsonScan::default()))
        } else {
            None
        }
    }

    /// Look at the next chunk of the body.
    pub fn feed(&mut self, chunk: &Bytes) {
        match self {
            UsageScanner::Json(scan) => scan.feed(chunk),
            UsageScanner::Sse(scan) => scan.feed(chunk),
        }
    }

    /// Return what the body said, once it has ended (or stopped).
    pub fn finish(self) -> ReplyUsage {
        match self {
            UsageScanner::Json(scan) => scan.finish(),
            UsageScanner::Sse(scan) => scan.finish(),
        }
    }
}

/// The parts of a usage object this log keeps.
#[derive(Debug, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Overwrite `usage` with every count this object carries.
    fn apply(self, usage: &mut TokenUsage) {
        let pairs = [
            (self.input_tokens, &mut usage.input_tokens),
            (self.output_tokens, &mut usage.output_tokens),
            (
                self.cache_creation_input_tokens,
                &mut usage.cache_creation_input_tokens,
            ),
            (
                self.cache_read_input_tokens,
                &mut usage.cache_read_input_tokens,
            ),
        ];
        for (new, slot) in pairs {
            if new.is_some() {
                *slot = new;
            }
        }
    }
}

/// A `message` object: the whole JSON reply, or the one inside `message_start`.
#[derive(Debug, Deserialize)]
struct WireMessage {
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireMessageStart {
    message: WireMessage,
}

#[derive(Debug, Deserialize)]
struct WireMessageDelta {
    usage: Option<WireUsage>,
}

/// Keeps the chunks of a JSON reply and parses them at the end.
#[derive(Debug, Default)]
pub struct JsonScan {
    chunks: Vec<Bytes>,
    len: usize,
    too_large: bool,
}

impl JsonScan {
    fn feed(&mut self, chunk: &Bytes) {
        if self.too_large {
            return;
        }
        self.len += chunk.len();
        if self.len > MAX_JSON_REPLY {
            self.too_large = true;
            self.chunks = Vec::new();
            return;
        }
        // A clone of `Bytes` shares the buffer; nothing is copied on the way through.
        self.chunks.push(chunk.clone());
    }

    fn finish(self) -> ReplyUsage {
        if self.too_large {
            return ReplyUsage::default();
        }
        let parsed = match self.chunks.as_slice() {
            [one] => serde_json::from_slice::<WireMessage>(one),
            many => serde_json::from_slice::<WireMessage>(&many.concat()),
        };
        let Ok(message) = parsed else {
            return ReplyUsage::default();
        };
        let mut usage = TokenUsage::default();
        if let Some(wire) = message.usage {
            wire.apply(&mut usage);
        }
        ReplyUsage {
            model: message.model,
            usage,
        }
    }
}

/// The SSE event whose data lines are being collected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Event {
    #[default]
    Unnamed,
    MessageStart,
    MessageDelta,
    Other,
}

/// Scans an SSE stream for the two events that carry usage.
#[derive(Debug, Default)]
pub struct SseScan {
    /// The start of a line that the previous chunk cut off.
    partial: Vec<u8>,
    /// The partial line grew past [`MAX_SSE_LINE`]; drop it up to its end.
    skipping: bool,
    event: Event,
    data: Vec<u8>,
    reply: ReplyUsage,
}

impl SseScan {
    fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (piece, after) = (&rest[..end], &rest[end + 1..]);
            rest = after;
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
            } else if self.partial.is_empty() {
                self.line(piece);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(piece);
                self.line(&line);
                // Keep the allocation for the next split line.
                line.clear();
                self.partial = line;
            }
        }
        if !rest.is_empty() && !self.skipping {
            if self.partial.len() + rest.len() > MAX_SSE_LINE {
                self.skipping = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
        } else if let Some(name) = line.strip_prefix(b"event:") {
            self.event = match name.trim_ascii() {
                b"message_start" => Event::MessageStart,
                b"message_delta" => Event::MessageDelta,
                _ => Event::Other,
            };
        } else if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            // A stream without `event:` lines still names its events inside the data.
            if self.event == Event::Unnamed {
                if value.starts_with(br#"{"type":"message_start""#) {
                    self.event = Event::MessageStart;
                } else if value.starts_with(br#"{"type":"message_delta""#) {
                    self.event = Event::MessageDelta;
                }
            }
            if matches!(self.event, Event::MessageStart | Event::MessageDelta) {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
        }
        // Comments (`:`), `id:` and `retry:` lines carry nothing for the log.
    }

    fn dispatch(&mut self) {
        match self.event {
            Event::MessageStart => {
                if let Ok(start) = serde_json::from_slice::<WireMessageStart>(&self.data) {
                    if start.message.model.is_some() {
                        self.reply.model = start.message.model;
                    }
                    if let Some(usage) = start.message.usage {
                        usage.apply(&mut self.reply.usage);
                    }
                }
            }
            Event::MessageDelta => {
                // The delta's counts are cumulative, so they replace the start's.
                if let Ok(delta) = serde_json::from_slice::<WireMessageDelta>(&self.data)
                    && let Some(usage) = delta.usage
                {
                    usage.apply(&mut self.reply.usage);
                }
            }
            Event::Unnamed | Event::Other => {}
        }
        self.event = Event::Unnamed;
        self.data.clear();
    }

    fn finish(mut self) -> ReplyUsage {
        // A stream cut off right after its last data line still counts that event.
        if !self.partial.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        self.dispatch();
        self.reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        "\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        "\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> ReplyUsage {
        ReplyUsage {
            model: Some("claude-sonnet-4-5".into()),
            usage: TokenUsage {
                input_tokens: Some(25),
                output_tokens: Some(15),
                cache_creation_input_tokens: Some(3),
                cache_read_input_tokens: Some(100),
            },
        }
    }

    fn scan_in_pieces(body: &[u8], sizes: impl Iterator<Item = usize>) -> ReplyUsage {
        let mut scanner = UsageScanner::for_content_type(Some(b"text/event-stream")).unwrap();
        let mut rest = body;
        for size in sizes {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at(size.min(rest.len()));
            scanner.feed(&Bytes::copy_from_slice(piece));
            rest = after;
        }
        assert!(rest.is_empty());
        scanner.finish()
    }

    #[test]
    fn sse_usage_is_read_whatever_the_chunk_boundaries() {
        let body = STREAM.as_bytes();
        assert_eq!(
            scan_in_pieces(body, std::iter::once(body.len())),
            expected()
        );
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(
                scan_in_pieces(body, std::iter::repeat(size)),
                expected(),
                "{size}"
            );
        }
        let crlf = STREAM.replace('\n', "\r\n");
        assert_eq!(
            scan_in_pieces(crlf.as_bytes(), std::iter::repeat(5)),
            expected()
        );
    }

    #[test]
    fn sse_without_event_lines_is_read_from_the_data() {
        let bare: String = STREAM
            .lines()
            .filter(|line| !line.starts_with("event:"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            scan_in_pieces(bare.as_bytes(), std::iter::repeat(11)),
            expected()
        );
    }

    #[test]
    fn a_delta_with_cumulative_input_counts_replaces_the_start() {
        let stream = STREAM.replace(
            r#""usage":{"output_tokens":15}"#,
            r#""usage":{"input_tokens":30,"output_tokens":15}"#,
        );
        let reply = scan_in_pieces(stream.as_bytes(), std::iter::repeat(100));
        assert_eq!(reply.usage.input_tokens, Some(30));
        assert_eq!(reply.usage.cache_read_input_tokens, Some(100));
    }

    #[test]
    fn json_usage_is_read_from_the_whole_reply() {
        let reply = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"cache_creation_input_tokens":null,"cache_read_input_tokens":0,"output_tokens":4}}"#;
        let mut scanner =
            UsageScanner::for_content_type(Some(b"application/json; charset=utf-8")).unwrap();
        for piece in reply.chunks(10) {
            scanner.feed(&Bytes::copy_from_slice(piece));
        }
        let parsed = scanner.finish();
        assert_eq!(parsed.model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(
            parsed.usage,
            TokenUsage {
                input_tokens: Some(9),
                output_tokens: Some(4),
                cache_creation_input_tokens: None,
                cache_read_input_tokens: Some(0),
            }
        );
    }

    #[test]
    fn error_replies_and_other_types_carry_no_usage() {
        assert!(UsageScanner::for_content_type(Some(b"text/plain")).is_none());
        assert!(UsageScanner::for_content_type(None).is_none());
        let mut scanner = UsageScanner::for_content_type(Some(b"application/json")).unwrap();
        scanner.feed(&Bytes::from_static(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ));
        assert_eq!(scanner.finish(), ReplyUsage::default());
    }
}
