//! Operator settings of the agent: which model server, which model, the key, and the limits.
//! The server fills this from its config file and `MAYFLY_AGENT_*` variables.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp…);
    /// requests go to `<base_url>/chat/completions`.
    Openai,
    /// Anthropic Messages; requests go to `<base_url>/v1/messages`.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "openai" => Ok(Self::Openai),
            "anthropic" => Ok(Self::Anthropic),
            other => Err(format!("unknown provider {other:?} (expected openai or anthropic)")),
        }
    }
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub provider: ProviderKind,
    pub base_url: String,
    pub model: String,
    /// Sent only to the model server; never logged, stored, shown or given to the VM.
    pub api_key: Option<String>,
    /// Replaces the shipped system prompt.
    pub system_prompt_file: Option<PathBuf>,
    /// Model turns per run.
    pub max_steps: u32,
    /// Input + output tokens per run, as the provider reports them.
    pub max_tokens: u64,
    /// Output tokens asked for per model turn.
    pub max_output_tokens: u32,
    /// Wall time per run.
    pub max_wall_seconds: u64,
    /// Approximate tokens of conversation sent per request; older tool output is cut beyond.
    pub context_tokens: u64,
    /// Retries of one model request (429, 5xx, timeouts, garbage) before the run fails.
    pub max_retries: u32,
    /// First backoff delay; doubles per retry, with jitter, up to `retry_max_delay_ms`.
    pub retry_base_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    /// One model request (until the stream ends).
    pub request_timeout_seconds: u64,
    /// Default timeout of the `shell` tool (the model may ask for less or up to 4×).
    pub shell_timeout_seconds: u64,
    /// Characters of one tool result the model sees (head and tail kept).
    pub tool_output_limit: usize,
    /// Chromium for the `browser` tool; default: the first of chromium, chromium-browser,
    /// google-chrome found in /usr/bin.
    pub browser_path: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Openai,
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o".into(),
            api_key: None,
            system_prompt_file: None,
            max_steps: 40,
            max_tokens: 2_000_000,
            max_output_tokens: 4096,
            max_wall_seconds: 1800,
            context_tokens: 100_000,
            max_retries: 5,
            retry_base_delay_ms: 500,
            retry_max_delay_ms: 30_000,
            request_timeout_seconds: 300,
            shell_timeout_seconds: 120,
            tool_output_limit: 16_000,
            browser_path: None,
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("system_prompt_file", &self.system_prompt_file)
            .field("max_steps", &self.max_steps)
            .field("max_tokens", &self.max_tokens)
            .field("max_wall_seconds", &self.max_wall_seconds)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    pub fn wall_time(&self) -> Duration {
        Duration::from_secs(self.max_wall_seconds)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// The system prompt: the operator's file if configured, else the shipped one.
    pub fn system_prompt(&self) -> std::io::Result<String> {
        match &self.system_prompt_file {
            Some(p) => std::fs::read_to_string(p),
            None => Ok(crate::DEFAULT_SYSTEM_PROMPT.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let c = AgentConfig { api_key: Some("sk-secret-123".into()), ..Default::default() };
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn provider_names() {
        assert_eq!("openai".parse::<ProviderKind>(), Ok(ProviderKind::Openai));
        assert_eq!("anthropic".parse::<ProviderKind>(), Ok(ProviderKind::Anthropic));
        assert!("gemini".parse::<ProviderKind>().is_err());
    }
}
