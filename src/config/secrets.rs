//! Secrets in configurations: [`SecretUrl`], [`SecretString`], the URL
//! redactor, and the scrubbing of errors that may quote them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A URL that may hold a password or token: `Debug` and `Display` redact it;
/// [`expose`](SecretUrl::expose) gives the real URL to the driver.
///
/// ```
/// use kvtower::config::SecretUrl;
///
/// let url = SecretUrl::new("redis://app:hunter2@cache:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/0");
/// assert!(!format!("{url:?}").contains("hunter2"));
/// assert_eq!(url.expose(), "redis://app:hunter2@cache:6379/0");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its secrets, for the driver only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", redact_url(&self.0))
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl)
    }
}

/// A secret that is not a URL (an API token): `Debug` and `Display` show
/// `***`; [`expose`](SecretString::expose) gives it to the driver.
///
/// ```
/// use kvtower::config::SecretString;
///
/// let token = SecretString::new("cf-hunter2");
/// assert_eq!(token.to_string(), "***");
/// assert!(!format!("{token:?}").contains("hunter2"));
/// assert_eq!(token.expose(), "cf-hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret, for the driver only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(\"***\")")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// Splits what follows a URL's `scheme://` into the secret of its user info
/// (the password, or the user when there is no password) and the rest
/// without the user info: `":tok@host/p"` is `(Some("tok"), "host/p")`.
pub(super) fn userinfo_secret(rest: &str) -> (Option<&str>, String) {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let secret = userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw);
            (Some(secret), rest[at + 1..].to_owned())
        }
        None => (None, rest.to_owned()),
    }
}

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "token",
    "access_token",
];

/// `url` with the password of its user info and the values of secret query
/// parameters replaced by `***`.
///
/// ```
/// use kvtower::config::redact_url;
/// assert_eq!(redact_url("postgres://u:p@h/db?password=x&sslmode=require"),
///            "postgres://u:***@h/db?password=***&sslmode=require");
/// assert_eq!(redact_url("redis://:token@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => format!("{userinfo}{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Redacts every URL-looking word of a free text (an error message quoting a
/// configuration line, for example).
pub(super) fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The URL starts after the last delimiter before the scheme separator.
        let start = rest[..i]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '=' | ',' | '['))
            .map_or(0, |d| d + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ']'))
            .map_or(rest.len(), |e| i + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `err` with every password and token of `urls` replaced by `***`, in its
/// message and in its source chain (a driver's message may quote the URL).
/// An error that holds none comes back unchanged, source included.
#[allow(dead_code)] // only the network backends use it
pub(super) fn scrub<'a>(err: Error, urls: impl IntoIterator<Item = &'a SecretUrl>) -> Error {
    scrub_secrets(
        err,
        urls.into_iter().flat_map(|url| url_secrets(url.expose())),
    )
}

/// `err` with each of `secrets` replaced by `***`, in its message and in its
/// source chain.
pub(super) fn scrub_secrets(err: Error, secrets: impl IntoIterator<Item = String>) -> Error {
    let secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    let source_text = std::error::Error::source(&err).map(|source| {
        let mut text = format!("{source}");
        let mut next = source.source();
        while let Some(cause) = next {
            text.push_str(&format!(": {cause}"));
            next = cause.source();
        }
        text
    });
    let leaks = |text: &str| secrets.iter().any(|s| text.contains(s.as_str()));
    let source_leaks = source_text.as_deref().is_some_and(|text| {
        leaks(text) || std::error::Error::source(&err).is_some_and(|s| leaks(&format!("{s:?}")))
    });
    if !leaks(err.message()) && !source_leaks {
        return err;
    }
    let hide = |text: &str| {
        secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    };
    let mut out = Error::new(err.kind(), hide(err.message())).with_retryable(err.is_retryable());
    if let Some(operation) = err.operation() {
        out = out.with_operation(operation);
    }
    if let Some(key) = err.key() {
        out = out.with_key(key);
    }
    match source_text {
        Some(text) if source_leaks => out.with_source(Redacted(hide(&text))),
        _ => out,
    }
}

/// The password of `url`'s user info and the values of its secret query
/// parameters, raw and percent-decoded (a driver may print either).
pub(super) fn url_secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut secrets = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_owned());
        }
    }
    if let Some((_, query)) = tail.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
                    secrets.push(v.to_owned());
                }
            }
        }
    }
    let decoded: Vec<String> = secrets.iter().filter_map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    secrets
}

/// `%XX`-decodes `text` when it has escapes and decodes to UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A source error's text with its secrets removed, standing in for the
/// original (which may quote a password).
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn full_text(err: &Error) -> String {
        let mut text = format!("{err} {err:?}");
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn scrub_removes_secrets_from_message_and_sources() {
        let url = SecretUrl::new("redis://app:p%40ss@h:6379/0?token=tok3n");
        let err = Error::new(ErrorKind::Unavailable, "auth as app:p%40ss refused")
            .with_operation("connect")
            .with_source(std::io::Error::other(
                "server said: wrong password p@ss, tok3n",
            ));
        let scrubbed = scrub(err, [&url]);
        let text = full_text(&scrubbed);
        assert!(!text.contains("p@ss") && !text.contains("p%40ss"), "{text}");
        assert!(!text.contains("tok3n"), "{text}");
        assert!(
            text.contains("wrong password ***"),
            "the source's text is kept: {text}"
        );
        assert_eq!(scrubbed.kind(), ErrorKind::Unavailable);
        assert_eq!(scrubbed.operation(), Some("connect"));
        assert!(scrubbed.is_retryable());
    }

    #[test]
    fn scrub_leaves_clean_errors_alone() {
        let url = SecretUrl::new("redis://h:6379");
        let err = Error::new(ErrorKind::Timeout, "slow").with_retryable(false);
        let scrubbed = scrub(err, [&url]);
        assert_eq!(scrubbed.to_string(), "timeout error: slow");
        assert!(!scrubbed.is_retryable());
    }
}
