//! Keeping secrets out of everything promptbatch shows or writes (logs, error messages, records,
//! the summary, the printed resume command): a URL's user-info (`user:password@`) and literal
//! secrets such as the API key are replaced by `[redacted]`; a URL whose path and query may hold
//! a token (a webhook's) is shown as its origin only ([`url_origin`]).

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed as literal text: replacing every `ab` in a message
/// would make it unreadable, and such a secret protects nothing.
const MIN_SECRET_LEN: usize = 4;

/// Replaces every occurrence of `secret` in `text` with `[redacted]`.
pub fn secret(text: &str, secret: &str) -> String {
    if secret.len() < MIN_SECRET_LEN || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, REDACTED)
}

/// Replaces the user-info of every URL in `text`: `https://alice:pw@host/v1` becomes
/// `https://[redacted]@host/v1`. The user-info is taken to run from `://` to the last `@` before
/// the next whitespace or quote, so a malformed URL (a `/` in an unencoded password) is covered
/// too; text after `://` without an `@` is left as it is.
pub fn url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let start = found + 3;
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || "\"'`<>".contains(c))
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str(REDACTED);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// A URL shown as `scheme://host[:port]/…`: no user-info, path, query or fragment, where a
/// webhook keeps its token (`https://hooks.slack.com/services/T0/B0/XXXX`, `…?token=…`). A text
/// that is not an absolute URL with a host is shown as `[redacted]`: nothing of it can be told
/// safe.
pub fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(parsed) => match parsed.host_str() {
            Some(host) => match parsed.port() {
                Some(port) => format!("{}://{host}:{port}/…", parsed.scheme()),
                None => format!("{}://{host}/…", parsed.scheme()),
            },
            None => REDACTED.to_string(),
        },
        Err(_) => REDACTED.to_string(),
    }
}

/// Whether a value given where the NAME of an environment variable belongs (`--api-key-env`)
/// looks like a key instead: not a variable name (letters, digits and `_`, not starting with a
/// digit — `sk-…` is not one), or a long mix of lower case, upper case and digits (`AIzaSy…`).
/// Such a value is never printed.
pub fn looks_like_a_key(name: &str) -> bool {
    let is_name = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mixed = name.chars().any(|c| c.is_ascii_lowercase())
        && name.chars().any(|c| c.is_ascii_uppercase())
        && name.chars().any(|c| c.is_ascii_digit());
    !is_name || (name.len() >= 20 && mixed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_given_for_a_variable_name_is_recognised() {
        for key in [
            "sk-abc123secret",
            "AIzaSyD4x9Qm2Lk7Pz0bV3nR8tW",
            "sk_live 123",
            "1ABC",
        ] {
            assert!(looks_like_a_key(key), "{key}");
        }
        for name in [
            "OPENAI_API_KEY",
            "MY_KEY_2",
            "evolink_key",
            "GEMINI_API_KEY_FOR_PROD_V2",
        ] {
            assert!(!looks_like_a_key(name), "{name}");
        }
    }

    use super::*;

    #[test]
    fn user_info_of_every_url_is_redacted() {
        assert_eq!(
            url_userinfo("sending to http://alice:S3cretPass@127.0.0.1:8080/v1/chat/completions"),
            "sending to http://[redacted]@127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(
            url_userinfo("a https://u@h/x and `http://p:q@[::1]:9/` end"),
            "a https://[redacted]@h/x and `http://[redacted]@[::1]:9/` end"
        );
        // A password with an unencoded `/` makes the URL invalid; it is still hidden.
        assert_eq!(
            url_userinfo("--base-url `http://alice:pa/ss@host/v1` is not a valid URL"),
            "--base-url `http://[redacted]@host/v1` is not a valid URL"
        );
    }

    #[test]
    fn text_without_user_info_is_unchanged() {
        for text in [
            "http://127.0.0.1:8080/v1",
            "no url here",
            "https://[redacted]@host/v1",
            "trailing ://",
            "mail me@example.com",
        ] {
            assert_eq!(url_userinfo(text), text);
        }
    }

    #[test]
    fn a_url_is_shown_as_its_origin_only() {
        assert_eq!(
            url_origin("https://hooks.slack.com/services/T0/B0/XXXXSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url_origin("http://alice:pw@127.0.0.1:8080/hook?token=abc#frag"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(url_origin("https://[::1]:9/x"), "https://[::1]:9/…");
        // The default port is not shown; a text that is no URL shows nothing of itself.
        assert_eq!(url_origin("https://h.example:443/x"), "https://h.example/…");
        for text in ["not a url sk-secret", "mailto:me@example.com", "https://"] {
            assert_eq!(url_origin(text), REDACTED, "{text}");
        }
    }

    #[test]
    fn literal_secrets_are_replaced_unless_too_short() {
        assert_eq!(secret("key sk-1234 here", "sk-1234"), "key [redacted] here");
        assert_eq!(secret("a b c", "b"), "a b c");
    }
}
