//! Anthropic Messages, streaming.
//!
//! Request: `{"model","system","messages":[{"role","content":[blocks]}],"tools":[{name,
//! description,input_schema}],"max_tokens","stream":true}`; roles alternate, so consecutive
//! tool results (and a following user text) share one `user` message of `tool_result` blocks.
//! Stream events: `message_start` (input usage), `content_block_start` (`text` | `tool_use`
//! with id and name), `content_block_delta` (`text_delta` | `input_json_delta`),
//! `content_block_stop`, `message_delta` (output usage), `message_stop`, `ping`, `error`.

use super::{each_event, parse_json, ProviderError, Request, Turn};
use crate::message::{Message, ToolCall};
use serde_json::{json, Value};

pub fn body(model: &str, max_tokens: u32, req: &Request<'_>) -> Value {
    let mut msgs: Vec<Value> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if let Some(last) = msgs.last_mut().filter(|m| m["role"] == role) {
            last["content"].as_array_mut().expect("content is an array").extend(blocks);
        } else {
            msgs.push(json!({"role": role, "content": blocks}));
        }
    };
    for m in req.messages {
        match m {
            Message::User { text } => push("user", vec![json!({"type": "text", "text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    // Malformed arguments were already answered with an error; the API wants an object.
                    let input = serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                if blocks.is_empty() {
                    blocks.push(json!({"type": "text", "text": "(no reply)"}));
                }
                push("assistant", blocks);
            }
            Message::Tool { call_id, content, is_error, image_png_base64, .. } => {
                let mut parts = vec![json!({"type": "text", "text": if content.is_empty() { "(empty)" } else { content }})];
                if let Some(png) = image_png_base64 {
                    parts.push(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}));
                }
                push("user", vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": parts, "is_error": is_error})]);
            }
        }
    }
    let tools: Vec<Value> =
        req.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters})).collect();
    json!({
        "model": model,
        "system": req.system,
        "messages": msgs,
        "tools": tools,
        "max_tokens": max_tokens,
        "stream": true,
    })
}

enum Block {
    Text,
    Tool(ToolCall),
    Other,
}

pub async fn read_stream(resp: reqwest::Response, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<Turn, ProviderError> {
    let mut turn = Turn::default();
    let mut blocks: Vec<(u64, Block)> = Vec::new();
    each_event(resp, |ev| {
        let v = parse_json(&ev.data)?;
        let kind = v["type"].as_str().unwrap_or(ev.event.as_str()).to_string();
        match kind.as_str() {
            "message_start" => {
                let u = &v["message"]["usage"];
                turn.usage.input_tokens = u["input_tokens"].as_u64().unwrap_or(0);
                turn.usage.output_tokens = u["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let index = v["index"].as_u64().ok_or_else(|| ProviderError::Malformed("content_block_start without index".into()))?;
                let b = &v["content_block"];
                let block = match b["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            turn.text.push_str(t);
                            on_text(t);
                        }
                        Block::Text
                    }
                    Some("tool_use") => Block::Tool(ToolCall {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: b["name"].as_str().unwrap_or_default().to_string(),
                        arguments: String::new(),
                    }),
                    _ => Block::Other,
                };
                blocks.push((index, block));
            }
            "content_block_delta" => {
                let index = v["index"].as_u64();
                let Some((_, block)) = blocks.iter_mut().rev().find(|(i, _)| Some(*i) == index) else {
                    return Err(ProviderError::Malformed("delta for a block that never started".into()));
                };
                let d = &v["delta"];
                match (block, d["type"].as_str()) {
                    (Block::Text, Some("text_delta")) => {
                        let t = d["text"].as_str().unwrap_or_default();
                        turn.text.push_str(t);
                        on_text(t);
                    }
                    (Block::Tool(c), Some("input_json_delta")) => c.arguments.push_str(d["partial_json"].as_str().unwrap_or_default()),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                    turn.usage.output_tokens = o;
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let message = v["error"]["message"].as_str().unwrap_or("error in stream").to_string();
                let status = if v["error"]["type"] == "overloaded_error" { 529 } else { 500 };
                return Err(ProviderError::Status { status, message, retry_after: None });
            }
            _ => {}
        }
        Ok(false)
    })
    .await?;
    for (i, (_, b)) in blocks.into_iter().enumerate() {
        if let Block::Tool(mut c) = b {
            if c.arguments.trim().is_empty() {
                c.arguments = "{}".into();
            }
            if c.id.is_empty() {
                c.id = format!("toolu_{i}");
            }
            turn.tool_calls.push(c);
        }
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_share_one_user_message() {
        let call = |id: &str| ToolCall { id: id.into(), name: "shell".into(), arguments: "{\"command\":\"ls\"}".into() };
        let result = |id: &str| Message::Tool { call_id: id.into(), name: "shell".into(), content: "x".into(), is_error: false, image_png_base64: None };
        let msgs = vec![
            Message::user("go"),
            Message::Assistant { text: "ok".into(), tool_calls: vec![call("a"), call("b")] },
            result("a"),
            result("b"),
            Message::user("more"),
        ];
        let b = body("m", 10, &Request { system: "sys", messages: &msgs, tools: &[] });
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{b}");
        assert_eq!(m[1]["content"][1], json!({"type": "tool_use", "id": "a", "name": "shell", "input": {"command": "ls"}}));
        let blocks = m[2]["content"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["type"], "tool_result");
        assert_eq!(blocks[1]["tool_use_id"], "b");
        assert_eq!(blocks[2]["type"], "text");
        assert_eq!(b["system"], "sys");
    }
}
