//! The coding agent end to end: a real server, a real VM, real tools; only the model is
//! scripted ([`mayfly_agent_testing::ScriptedModel`], real OpenAI / Anthropic streaming wire
//! formats). Assertions are on the VM's real state (files, processes, the preview's response
//! through the real proxy), not on the transcript.

mod browser;
mod faults;
mod helpers;
mod scenarios;
