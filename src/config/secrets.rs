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

/// `url` (or a libpq `key=value` string) with its passwords and tokens
/// replaced by `***`: the crate's one redactor, also behind [`SecretUrl`],
/// the stores' `Debug` output and their URL errors.
///
/// It reads credentials the way each driver does: a PostgreSQL URL's
/// password runs to the first `@` (so it may hold `#`, `?` or `/`); query
/// parameters are matched on their percent-decoded name (`p%61ssword`);
/// libpq's key-value form is parsed with its quotes and escapes. A URL it
/// cannot read without doubt shows its scheme only.
///
/// ```
/// use kvtower::config::redact_url;
/// assert_eq!(redact_url("postgres://u:p@h/db?password=x&sslmode=require"),
///            "postgres://u:***@h/db?password=***&sslmode=require");
/// assert_eq!(redact_url("redis://:token@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// assert_eq!(redact_url("postgres://u:a#b/c@h/db"), "postgres://u:***@h/db");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock?pass=s3cr3t"),
///            "redis+unix:///run/redis.sock?pass=***");
/// assert_eq!(redact_url("host=db password='a b' user=u"), "host=db password=*** user=u");
/// assert_eq!(redact_url("redis://:a#b@h"), "redis://***");
/// ```
pub fn redact_url(url: &str) -> String {
    crate::redact::redact_url(url)
}

pub(super) use crate::redact::redact_text;

/// `err` with every password and token of `urls` replaced by `***`, in its
/// message and in its source chain (a driver's message may quote the URL).
/// An error that holds none comes back unchanged, source included.
#[allow(dead_code)] // only the network backends use it
pub(super) fn scrub<'a>(err: Error, urls: impl IntoIterator<Item = &'a SecretUrl>) -> Error {
    crate::redact::scrub(err, urls.into_iter().map(SecretUrl::expose))
}

#[allow(unused_imports)] // only the token-holding backends use them
pub(super) use crate::redact::{scrub_secrets, secrets as url_secrets};

/// `%XX`-decodes `text` when it has escapes and decodes to UTF-8.
#[allow(dead_code)] // only the token-holding backends use it
pub(super) fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    String::from_utf8(crate::redact::percent_decode_bytes(text)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::Operation;

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
            .with_operation(Operation::Connect)
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
        assert_eq!(scrubbed.operation(), Some(Operation::Connect));
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
