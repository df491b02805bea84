//! Reading a secret (a token, a password) from standard input: a prompt without echo on a
//! terminal, else its first line.

use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal};

/// The secret without its line ending; `what` names it in the prompt and in errors.
pub fn read(what: &str) -> anyhow::Result<String> {
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{what}: ")).with_context(|| format!("reading the {what}"))?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).with_context(|| format!("reading the {what} from stdin"))?;
        line
    };
    let secret = line.trim_end_matches(['\n', '\r']).to_string();
    if secret.trim().is_empty() {
        bail!("no {what} given on stdin");
    }
    Ok(secret)
}
