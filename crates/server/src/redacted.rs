//! [`Redacted`]: a setting that must never reach a log line or a `{:?}` (a database URL with its
//! password, a client secret, the cluster secret). It reads like a string where it is used and
//! prints as `<redacted>` everywhere else.

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    /// The value itself, for the one place that needs it (a connection, a key derivation).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Redacted {
    fn from(s: &str) -> Self {
        Redacted(s.to_string())
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let r: Redacted = serde_json::from_str("\"postgres://u:hunter2@db/x\"").unwrap();
        assert_eq!(r.expose(), "postgres://u:hunter2@db/x");
        assert_eq!(format!("{r:?} {:?}", Some(r.clone())), "<redacted> Some(<redacted>)");
    }
}
