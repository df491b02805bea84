//! The provider-neutral conversation. The server stores it per session as JSON (one row per
//! message), so a follow-up prompt continues where the last run ended; each provider client
//! maps it to its own wire format.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        text: String,
    },
    Assistant {
        #[serde(default)]
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call.
    Tool {
        call_id: String,
        name: String,
        content: String,
        #[serde(default)]
        is_error: bool,
        /// A PNG screenshot (base64), shown to models that accept images.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_png_base64: Option<String>,
    },
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Message::User { text: text.into() }
    }

    /// Rough size in tokens (4 bytes a token), for keeping the context within the window.
    pub fn approx_tokens(&self) -> u64 {
        let bytes = match self {
            Message::User { text } => text.len(),
            Message::Assistant { text, tool_calls } => {
                text.len() + tool_calls.iter().map(|c| c.name.len() + c.arguments.len() + 16).sum::<usize>()
            }
            // An image costs roughly a thousand tokens whatever its size.
            Message::Tool { content, image_png_base64, .. } => content.len() + image_png_base64.as_ref().map_or(0, |_| 4000),
        };
        (bytes as u64).div_ceil(4) + 4
    }
}

/// A tool call as the model made it; `arguments` is the raw JSON text (it may be malformed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Tokens a request consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}
