//! Keeping the conversation within the model's window: when the estimated size exceeds the
//! budget, the oldest tool results are cut to a stub (screenshots first, then text), never the
//! last turn's. User prompts and assistant messages are kept whole.

use crate::message::Message;

/// Stub left in place of a cut tool result.
pub const CUT: &str = "[output removed to save context]";

/// The conversation to send: `messages` with old tool output cut until it fits in `budget`
/// tokens (or nothing more can be cut).
pub fn fit(messages: &[Message], budget: u64) -> Vec<Message> {
    let mut out = messages.to_vec();
    let mut size: u64 = out.iter().map(Message::approx_tokens).sum();
    if size <= budget {
        return out;
    }
    // The results of the latest assistant turn stay whole: the model has not seen them yet.
    let protected = out.iter().rposition(|m| matches!(m, Message::Assistant { .. })).unwrap_or(out.len());
    for m in out[..protected].iter_mut() {
        if let Message::Tool { content, image_png_base64, .. } = m {
            let before = m_size(content, image_png_base64);
            *image_png_base64 = None;
            if content.len() > CUT.len() {
                *content = CUT.to_string();
            }
            size -= before - m_size(content, image_png_base64);
            if size <= budget {
                break;
            }
        }
    }
    out
}

fn m_size(content: &str, image: &Option<String>) -> u64 {
    Message::Tool { call_id: String::new(), name: String::new(), content: content.to_string(), is_error: false, image_png_base64: image.clone() }
        .approx_tokens()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolCall;

    fn tool(content: &str) -> Message {
        Message::Tool { call_id: "c".into(), name: "shell".into(), content: content.into(), is_error: false, image_png_base64: None }
    }
    fn assistant() -> Message {
        Message::Assistant { text: String::new(), tool_calls: vec![ToolCall { id: "c".into(), name: "shell".into(), arguments: "{}".into() }] }
    }

    #[test]
    fn small_conversations_are_untouched() {
        let m = vec![Message::user("hi"), assistant(), tool("out")];
        assert_eq!(fit(&m, 1000), m);
    }

    #[test]
    fn oldest_tool_output_goes_first_and_the_latest_stays() {
        let big = "x".repeat(4000);
        let m = vec![Message::user("hi"), assistant(), tool(&big), assistant(), tool(&big), assistant(), tool(&big)];
        let out = fit(&m, 2100);
        let contents: Vec<&str> = out.iter().filter_map(|m| match m { Message::Tool { content, .. } => Some(content.as_str()), _ => None }).collect();
        assert_eq!(contents, [CUT, &big, &big]);
        let out = fit(&m, 10);
        let contents: Vec<&str> = out.iter().filter_map(|m| match m { Message::Tool { content, .. } => Some(content.as_str()), _ => None }).collect();
        assert_eq!(contents, [CUT, CUT, &big], "the latest result is never cut");
        assert_eq!(out[0], Message::user("hi"));
    }
}
