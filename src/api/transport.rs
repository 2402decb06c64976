//! Failures before any HTTP answer (DNS, connect, proxy tunnel, TLS, reset) and what they mean
//! for the run:
//! - a certificate the client does not trust is a configuration error: the run stops at once,
//!   naming the host and `--ca-cert` (retrying cannot make it trusted);
//! - an endpoint that cannot be reached at all (no connection) while no answer has arrived yet
//!   is taken for a wrong address or a missing proxy setting: the run stops within seconds;
//! - after an answer has arrived, the same failures are an outage and are retried, so a run
//!   survives a night's network trouble.
//!
//! Answers with a status are classified in `classify.rs`; this module only decides the failures
//! that have none.

use hyper_util::client::proxy::matcher::Matcher;

use super::classify::{Failure, FailureKind};
use crate::util::redact;

/// Where requests go, as it may be shown (user-info redacted).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The whole URL, user-info redacted.
    pub shown: String,
    /// `host:port`, for messages about the server's certificate.
    pub host: String,
    /// The proxy requests go through, from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` minus
    /// `NO_PROXY` (user-info redacted); reqwest reads the same variables with the same matcher.
    pub proxy: Option<String>,
}

impl Endpoint {
    pub(crate) fn new(url: &reqwest::Url) -> Self {
        let host = url.host_str().unwrap_or("?");
        let host = match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let proxy = url
            .as_str()
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|uri| Matcher::from_system().intercept(&uri))
            .map(|proxy| {
                let uri = proxy.uri().to_string();
                redact::url_userinfo(uri.strip_suffix('/').unwrap_or(&uri))
            });
        Endpoint {
            shown: redact::url_userinfo(url.as_str()),
            host,
            proxy,
        }
    }

    /// ` through the proxy URL`, or nothing.
    fn via(&self) -> String {
        self.proxy
            .as_ref()
            .map_or_else(String::new, |p| format!(" through the proxy {p}"))
    }
}

/// What a failed attempt without an HTTP answer means. `answered`: an HTTP answer (of any
/// status) has arrived in this run, so the address is right.
pub(crate) fn classify(error: &reqwest::Error, endpoint: &Endpoint, answered: bool) -> Failure {
    let description = describe(error);
    if let Some(tls) = untrusted_certificate(error) {
        return fatal(format!(
            "the server at {}{} presented a certificate that is not trusted ({tls}). promptbatch \
             trusts the bundled web roots and the operating system's trust store; behind a \
             TLS-inspecting proxy or with a private CA, pass its certificate with --ca-cert FILE \
             (PEM) or add it to the system's trust store",
            endpoint.host,
            endpoint.via()
        ));
    }
    if error.is_connect() && !answered {
        return fatal(format!(
            "cannot reach {}{} before any answer has arrived ({description}): check --base-url \
             and the network (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY are honoured)",
            endpoint.shown,
            endpoint.via()
        ));
    }
    Failure::transient(description)
}

fn fatal(message: String) -> Failure {
    let mut failure = Failure::transient(message);
    failure.kind = FailureKind::Fatal;
    failure
}

/// The certificate error among the causes of a connection error, if any. rustls reports it
/// inside (nested) `io::Error`s, whose `source()` skips the wrapped error, hence the `get_ref`s.
fn untrusted_certificate(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let mut layer = current;
        loop {
            if let Some(tls @ rustls::Error::InvalidCertificate(_)) = layer.downcast_ref() {
                return Some(tls);
            }
            match layer
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => layer = inner,
                None => break,
            }
        }
        cause = current.source();
    }
    None
}

/// A reqwest error with its causes ("error sending request: connection reset by peer").
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_shown_without_user_info() {
        let url = reqwest::Url::parse("https://alice:pw@api.example/v1/chat/completions").unwrap();
        let endpoint = Endpoint::new(&url);
        assert_eq!(
            endpoint.shown,
            "https://[redacted]@api.example/v1/chat/completions"
        );
        assert_eq!(endpoint.host, "api.example:443");
    }
}
