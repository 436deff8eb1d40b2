//! The JSON error body every route answers with on failure.

use serde::{Deserialize, Serialize};

/// `{"error": {"type": …, "message": …}}`, the shape Anthropic's API uses too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: ApiError,
}

/// The inner object of [`ApiErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable, machine-readable kind such as `not_found_error` or `token_used`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A sentence for a person: what happened and what to do next.
    pub message: String,
}

impl ApiErrorBody {
    /// Build a body from a kind and a message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ApiErrorBody {
            error: ApiError {
                kind: kind.into(),
                message: message.into(),
            },
        }
    }
}
