//! Client-given strings in the server's messages.

/// A client-given string (a model or region name) cut to a length fit for an error message, so a
/// hostile client cannot make errors echo megabytes back.
pub fn clip(text: &str) -> String {
    const MAX: usize = 128;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}
