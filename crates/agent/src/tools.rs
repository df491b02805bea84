//! The tools the model sees, and the [`Tools`] trait that runs them. The server implements
//! `Tools` against the session's VM; `finish` is handled by the loop itself.

use serde_json::{json, Value};

/// One tool as described to the model (a JSON Schema for its arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: Value,
}

/// What a tool returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    pub text: String,
    pub is_error: bool,
    /// A PNG (the browser's screenshot).
    pub image_png: Option<Vec<u8>>,
    /// Files the call wrote (absolute guest paths), for editors to reload.
    pub paths: Vec<String>,
}

impl ToolOutput {
    pub fn ok(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Default::default() }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self { text: text.into(), is_error: true, ..Default::default() }
    }
}

/// Runs tools. `call` never fails: a failure is an error result the model reads and reacts to.
#[async_trait::async_trait]
pub trait Tools: Send + Sync {
    async fn call(&self, name: &str, args: Value) -> ToolOutput;
}

pub const FINISH: &str = "finish";

fn object(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

/// Every tool, in the order the model sees them.
pub fn specs() -> Vec<ToolSpec> {
    let s = |d: &str| json!({"type": "string", "description": d});
    vec![
        ToolSpec {
            name: "shell",
            description: "Run a shell command (sh -c) in your terminal in the VM, which the human sees live. Returns the combined output and the exit code. Start servers in the background with output redirected.",
            parameters: object(
                json!({"command": s("the command line"), "timeout_seconds": {"type": "integer", "description": "kill it after this many seconds (default 120)"}}),
                &["command"],
            ),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file from the VM.",
            parameters: object(json!({"path": s("absolute path, or relative to /root")}), &["path"]),
        },
        ToolSpec {
            name: "write_file",
            description: "Create or replace a file in the VM (parent directories are created).",
            parameters: object(json!({"path": s("absolute path, or relative to /root"), "content": s("the whole new content")}), &["path", "content"]),
        },
        ToolSpec {
            name: "edit_file",
            description: "Replace exactly one occurrence of old_string with new_string in a file. Fails if old_string is missing or occurs more than once; include more context to make it unique.",
            parameters: object(
                json!({"path": s("absolute path, or relative to /root"), "old_string": s("exact text to replace"), "new_string": s("replacement")}),
                &["path", "old_string", "new_string"],
            ),
        },
        ToolSpec {
            name: "list_dir",
            description: "List a directory in the VM.",
            parameters: object(json!({"path": s("absolute path, or relative to /root")}), &[]),
        },
        ToolSpec {
            name: "search",
            description: "Search file contents with a regular expression (ripgrep, or grep where ripgrep is missing).",
            parameters: object(json!({"pattern": s("regular expression"), "path": s("where to search (default /root)")}), &["pattern"]),
        },
        ToolSpec {
            name: "ports",
            description: "List the TCP ports programs in the VM listen on, with their preview URLs.",
            parameters: object(json!({}), &[]),
        },
        ToolSpec {
            name: "http",
            description: "Send an HTTP request to a port of this VM through its preview URL; returns the status, headers and body.",
            parameters: object(
                json!({"port": {"type": "integer"}, "path": s("request path, default /"), "method": s("default GET"), "body": s("request body")}),
                &["port"],
            ),
        },
        ToolSpec {
            name: "browser",
            description: "Open a port of this VM in a headless browser; returns a screenshot, the page title and the console errors.",
            parameters: object(json!({"port": {"type": "integer"}, "path": s("default /")}), &["port"]),
        },
        ToolSpec {
            name: FINISH,
            description: "End the task with a short summary for the human.",
            parameters: object(json!({"summary": s("what was done, or why it could not be")}), &["summary"]),
        },
    ]
}

/// `text` cut to about `limit` characters, keeping its head and tail (errors are often at the end).
pub fn truncate_middle(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        return text.to_string();
    }
    let head: String = text.chars().take(limit / 2).collect();
    let tail: String = text.chars().skip(count - limit / 2).collect();
    format!("{head}\n[… {} characters cut …]\n{tail}", count - head.chars().count() - tail.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_unique_and_schemas_are_objects() {
        let specs = specs();
        let mut names: Vec<_> = specs.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        assert!(specs.iter().all(|s| s.parameters["type"] == "object"));
    }

    #[test]
    fn truncation_keeps_head_and_tail() {
        assert_eq!(truncate_middle("short", 10), "short");
        let long = format!("{}{}", "a".repeat(100), "b".repeat(100));
        let t = truncate_middle(&long, 20);
        assert!(t.starts_with("aaaaaaaaaa\n[… 180 characters cut …]\nbbbbbbbbbb"), "{t}");
    }
}
