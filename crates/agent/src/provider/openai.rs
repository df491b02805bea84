//! OpenAI-compatible Chat Completions, streaming.
//!
//! Request: `{"model","messages":[system, user, assistant{tool_calls}, tool{tool_call_id}…],
//! "tools":[{"type":"function","function":{name,description,parameters}}],"stream":true,
//! "stream_options":{"include_usage":true},"max_tokens"}`.
//! Stream: `data: {"choices":[{"delta":{"content"|"tool_calls":[{index,id,function:{name,arguments}}]},
//! "finish_reason"}],"usage"}` lines, then `data: [DONE]`. Tool arguments arrive in pieces keyed
//! by `index`. Tool messages cannot carry images, so a screenshot follows as a user message.

use super::{each_event, parse_json, ProviderError, Request, Turn};
use crate::message::{Message, ToolCall};
use serde_json::{json, Value};

pub fn body(model: &str, max_tokens: u32, req: &Request<'_>) -> Value {
    let mut msgs = vec![json!({"role": "system", "content": req.system})];
    let mut images: Vec<Value> = Vec::new();
    for m in req.messages {
        if !matches!(m, Message::Tool { .. }) && !images.is_empty() {
            msgs.push(images_message(std::mem::take(&mut images)));
        }
        match m {
            Message::User { text } => msgs.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                let mut a = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !tool_calls.is_empty() {
                    a["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                        .collect();
                }
                msgs.push(a);
            }
            Message::Tool { call_id, content, image_png_base64, .. } => {
                msgs.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                if let Some(png) = image_png_base64 {
                    images.push(json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}));
                }
            }
        }
    }
    if !images.is_empty() {
        msgs.push(images_message(images));
    }
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    json!({
        "model": model,
        "messages": msgs,
        "tools": tools,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": max_tokens,
    })
}

fn images_message(mut parts: Vec<Value>) -> Value {
    parts.insert(0, json!({"type": "text", "text": "Screenshot from the browser tool:"}));
    json!({"role": "user", "content": parts})
}

/// Tool calls being assembled from deltas, by `index`.
#[derive(Default)]
struct Partial {
    calls: Vec<ToolCall>,
}

impl Partial {
    fn apply(&mut self, delta: &Value) -> Result<(), ProviderError> {
        let index = delta["index"].as_u64().unwrap_or(self.calls.len().saturating_sub(1) as u64) as usize;
        if index > 1000 {
            return Err(ProviderError::Malformed(format!("tool call index {index}")));
        }
        while self.calls.len() <= index {
            self.calls.push(ToolCall { id: String::new(), name: String::new(), arguments: String::new() });
        }
        let c = &mut self.calls[index];
        if let Some(id) = delta["id"].as_str() {
            c.id = id.to_string();
        }
        if let Some(n) = delta["function"]["name"].as_str() {
            c.name.push_str(n);
        }
        if let Some(a) = delta["function"]["arguments"].as_str() {
            c.arguments.push_str(a);
        }
        Ok(())
    }
}

pub async fn read_stream(resp: reqwest::Response, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<Turn, ProviderError> {
    let mut turn = Turn::default();
    let mut partial = Partial::default();
    each_event(resp, |ev| {
        if ev.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v = parse_json(&ev.data)?;
        if let Some(err) = v.get("error") {
            let message = err["message"].as_str().unwrap_or("error in stream").to_string();
            return Err(ProviderError::Status { status: 500, message, retry_after: None });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            turn.usage.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
            turn.usage.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return if v.get("usage").is_some() { Ok(false) } else { Err(ProviderError::Malformed("chunk without choices".into())) };
        };
        for choice in choices {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                if !t.is_empty() {
                    turn.text.push_str(t);
                    on_text(t);
                }
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for c in calls {
                    partial.apply(c)?;
                }
            }
        }
        Ok(false)
    })
    .await?;
    for (i, mut c) in partial.calls.into_iter().enumerate() {
        if c.id.is_empty() {
            c.id = format!("call_{i}");
        }
        turn.tool_calls.push(c);
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolSpec;

    #[test]
    fn request_shape() {
        let msgs = vec![
            Message::user("hi"),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall { id: "c1".into(), name: "browser".into(), arguments: "{}".into() }],
            },
            Message::Tool { call_id: "c1".into(), name: "browser".into(), content: "ok".into(), is_error: false, image_png_base64: Some("AAA".into()) },
        ];
        let tools = [ToolSpec { name: "browser", description: "d", parameters: json!({"type": "object"}) }];
        let b = body("m", 100, &Request { system: "sys", messages: &msgs, tools: &tools });
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "sys"}));
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["name"], "browser");
        assert_eq!(b["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "ok"}));
        assert_eq!(b["messages"][4]["role"], "user");
        assert_eq!(b["messages"][4]["content"][1]["image_url"]["url"], "data:image/png;base64,AAA");
        assert_eq!(b["tools"][0]["function"]["name"], "browser");
        assert_eq!(b["stream"], true);
    }
}
