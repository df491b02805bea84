//! The co-tenant coding agent: a model, a set of tools, and the loop between them.
//!
//! * [`provider`] — streaming clients for OpenAI-compatible Chat Completions and Anthropic's
//!   Messages API, behind one [`provider::Model`] type.
//! * [`retry`] — exponential backoff with jitter, `Retry-After`, a retry budget.
//! * [`run`] — the loop: budgets (steps, tokens, wall time), context trimming, tool dispatch,
//!   cancellation, events.
//! * [`tools`] — the tool set the model sees ([`tools::specs`]) and the [`tools::Tools`] trait the
//!   server implements against the session's VM. This crate never touches a VM.
//! * [`message`] — the provider-neutral conversation, stored per session by the server.
//! * `testing` (feature) — a scripted model server speaking both real wire formats.
//!
//! API keys live only in [`AgentConfig`]; its `Debug` redacts them and nothing here logs them.

pub mod config;
pub mod context;
pub mod message;
pub mod provider;
pub mod retry;
pub mod run;
pub mod sse;
pub mod tools;

pub use config::{AgentConfig, ProviderKind};
pub use message::{Message, ToolCall, Usage};
pub use run::{AgentEvent, RunOutcome, RunStatus};
pub use tools::{ToolOutput, Tools};

/// The system prompt shipped with Mayfly (an operator can replace it, see
/// [`AgentConfig::system_prompt_file`]).
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("system_prompt.md");
