//! Error kinds: a message with its numbers removed, so that `HTTP 429: retry after 1200ms (row
//! 17)` and `… 800ms (row 18)` count as one kind (the report's common errors, the breaker's
//! streaks, warnings that repeat).

/// An error message with runs of digits replaced by `N`, except a status code after `HTTP `.
pub fn normalize_error(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut end = i + 1;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        if message[..i].ends_with("HTTP ") {
            out.push_str(&message[i..end]);
        } else {
            out.push('N');
        }
    }
    out
}
