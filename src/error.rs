//! [`Error`], [`ErrorKind`] and [`Result`]: the one error type of the crate.

use std::fmt;
use std::sync::Arc;

use crate::key::KvKey;
pub use crate::operation::Operation;

/// The result type of every fallible kvtower operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, coarsely: match on this, not on messages.
///
/// New kinds may be added in minor releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key is not valid (for example an empty key, or one a backend cannot
    /// represent).
    InvalidKey,
    /// A value could not be encoded or decoded (for example invalid JSON that
    /// another program wrote into the backend, or a typed value that does not
    /// deserialize into the requested type).
    InvalidValue,
    /// A value is larger than the store accepts.
    ValueTooLarge,
    /// The backend cannot be reached (connection refused or lost). Retryable.
    Unavailable,
    /// The operation did not finish in time. Retryable.
    Timeout,
    /// The store does not support this operation.
    Unsupported,
    /// A configuration is invalid.
    Config,
    /// Any other backend failure.
    Backend,
}

impl ErrorKind {
    /// A short, stable, lowercase name, fit for a metric label.
    ///
    /// ```
    /// assert_eq!(kvtower::ErrorKind::Timeout.as_str(), "timeout");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::Backend => "backend",
        }
    }

    /// Whether errors of this kind are retryable unless said otherwise.
    fn retryable_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every kvtower operation: a [`kind`](Error::kind), a message,
/// the failing operation and key when known, whether a retry may succeed, and
/// the underlying error as its [`source`](std::error::Error::source).
///
/// # Examples
///
/// ```
/// use kvtower::{kvkey, Error, ErrorKind, Operation};
///
/// let err = Error::new(ErrorKind::Timeout, "no answer in 50ms")
///     .with_operation(Operation::Get)
///     .with_key(&kvkey!["user", "42"]);
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), r#"timeout error in get of ["user","42"]: no answer in 50ms"#);
/// ```
///
/// Errors are `Clone` (the source is shared) and compare equal when their
/// kind, message, operation, key and retryability are (sources are not
/// compared), so that a response carrying errors (a listing's, through the
/// tower bridge) is a plain value.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<Operation>,
    key: Option<KvKey>,
    retryable: Option<bool>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error{}: {}",
            self.kind,
            Context::new(&self.operation, &self.key),
            self.message
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.message == other.message
            && self.operation == other.operation
            && self.key == other.key
            && self.is_retryable() == other.is_retryable()
    }
}

struct Context<'a> {
    operation: Option<Operation>,
    key: Option<&'a KvKey>,
}

impl<'a> Context<'a> {
    fn new(operation: &Option<Operation>, key: &'a Option<KvKey>) -> Self {
        Self {
            operation: *operation,
            key: key.as_ref(),
        }
    }
}

impl fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(op) = self.operation {
            write!(f, " in {op}")?;
        }
        if let Some(key) = self.key {
            write!(f, " of {key}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(op) = self.operation {
            d.field("operation", &op);
        }
        if let Some(key) = &self.key {
            d.field("key", key);
        }
        d.field("retryable", &self.is_retryable());
        if let Some(source) = &self.cause {
            d.field("source", source);
        }
        d.finish()
    }
}

impl Error {
    /// A new error of `kind` with a human-readable `message`.
    ///
    /// ```
    /// let err = kvtower::Error::new(kvtower::ErrorKind::Config, "bad url");
    /// assert_eq!(err.message(), "bad url");
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            operation: None,
            key: None,
            retryable: None,
            cause: None,
        }
    }

    /// Records the operation that failed, unless one is already recorded:
    /// the innermost store knows best.
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind, Operation};
    /// let err = Error::new(ErrorKind::Backend, "x")
    ///     .with_operation(Operation::Cas)
    ///     .with_operation(Operation::Get);
    /// assert_eq!(err.operation(), Some(Operation::Cas));
    /// ```
    #[must_use]
    pub fn with_operation(mut self, operation: Operation) -> Self {
        self.operation.get_or_insert(operation);
        self
    }

    /// Records the key the operation was about, unless one is already recorded.
    ///
    /// ```
    /// # use kvtower::{kvkey, Error, ErrorKind};
    /// let err = Error::new(ErrorKind::InvalidValue, "not JSON").with_key(&kvkey!["a"]);
    /// assert_eq!(err.key(), Some(&kvkey!["a"]));
    /// ```
    #[must_use]
    pub fn with_key(mut self, key: &KvKey) -> Self {
        if self.key.is_none() {
            self.key = Some(key.clone());
        }
        self
    }

    /// Chains the underlying error, returned by
    /// [`source`](std::error::Error::source).
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind};
    /// use std::error::Error as _;
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let err = Error::new(ErrorKind::Unavailable, "cannot connect").with_source(io);
    /// assert!(err.source().is_some());
    /// ```
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.cause = Some(Arc::from(source.into()));
        self
    }

    /// Overrides whether a retry may succeed (by default only
    /// [`Unavailable`](ErrorKind::Unavailable) and
    /// [`Timeout`](ErrorKind::Timeout) errors are retryable).
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Backend, "busy loading").with_retryable(true);
    /// assert!(err.is_retryable());
    /// ```
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// This error, marked not retryable, with `why` added to its message:
    /// what a retry policy says when it gives up on a retryable error.
    pub(crate) fn no_longer_retryable(mut self, why: &str) -> Self {
        self.message = format!("{} ({why})", self.message);
        self.retryable = Some(false);
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind, operation and key.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<Operation> {
        self.operation
    }

    /// The key the failing operation was about, when known.
    pub fn key(&self) -> Option<&KvKey> {
        self.key.as_ref()
    }

    /// Whether the same call may succeed if retried (the backend was
    /// unreachable, slow, or said so).
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Unavailable, "down").is_retryable());
    /// assert!(!Error::new(ErrorKind::InvalidKey, "empty").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
            .unwrap_or_else(|| self.kind.retryable_by_default())
    }

    /// Shorthand for an [`ErrorKind::Unsupported`] error naming the operation.
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind, Operation};
    /// let err = Error::unsupported(Operation::Cas, "no atomic update");
    /// assert_eq!(err.kind(), ErrorKind::Unsupported);
    /// ```
    pub fn unsupported(operation: Operation, why: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, why).with_operation(operation)
    }

    /// Shorthand for an [`ErrorKind::Config`] error; the message should name the
    /// field and the allowed values.
    ///
    /// ```
    /// # use kvtower::{Error, ErrorKind};
    /// assert_eq!(Error::config("backend: expected one of memory, redis").kind(), ErrorKind::Config);
    /// ```
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
}

impl Error {
    /// This error with `hide` applied to its message and, when it changes
    /// anything there, to the text of its source chain, which then stands
    /// in for the source (a driver's error may quote a password). Kind,
    /// operation, key and retryability are kept; a source `hide` leaves
    /// alone is kept as it is.
    #[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
    pub(crate) fn redacted(mut self, hide: impl Fn(&str) -> String) -> Self {
        self.message = hide(&self.message);
        if let Some(source) = &self.cause {
            let mut chain = source.to_string();
            let mut next = source.source();
            while let Some(cause) = next {
                chain.push_str(&format!(": {cause}"));
                next = cause.source();
            }
            let debug = format!("{source:?}");
            let hidden = hide(&chain);
            if hidden != chain || hide(&debug) != debug {
                self.cause = Some(Arc::new(Redacted(hidden)));
            }
        }
        self
    }
}

/// A source error's text with its secrets removed, standing in for the
/// original.
#[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
#[derive(Debug)]
struct Redacted(String);

#[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(any(feature = "config", feature = "redis", feature = "postgres"))]
impl std::error::Error for Redacted {}

/// Attaches a failing call's context, once, where a store's [`KvStore`]
/// method begins: its [`Operation`] and, for single-key calls, its key. The
/// helpers under that boundary (a backend's driver-error mapping, its
/// statements) leave both out, so each is named in one place per method.
///
/// [`KvStore`]: crate::KvStore
#[allow(dead_code)] // not every feature set has a store that uses both
pub(crate) trait ResultExt<T> {
    /// The error, if any, names `operation` and `key` (unless already set).
    fn ctx(self, operation: Operation, key: &KvKey) -> Result<T>;
    /// The error, if any, names `operation` (unless already set).
    fn op(self, operation: Operation) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, operation: Operation, key: &KvKey) -> Result<T> {
        self.map_err(|e| e.with_operation(operation).with_key(key))
    }

    fn op(self, operation: Operation) -> Result<T> {
        self.map_err(|e| e.with_operation(operation))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::new(ErrorKind::InvalidValue, err.to_string()).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvkey;

    #[test]
    fn display_has_kind_operation_key_and_message() {
        let err = Error::new(ErrorKind::InvalidValue, "not JSON")
            .with_operation(Operation::Get)
            .with_key(&kvkey!["a", "b"]);
        assert_eq!(
            err.to_string(),
            r#"invalid_value error in get of ["a","b"]: not JSON"#
        );
        let bare = Error::new(ErrorKind::Config, "x");
        assert_eq!(bare.to_string(), "config error: x");
    }

    #[test]
    fn retryable_defaults_follow_kind() {
        assert!(Error::new(ErrorKind::Timeout, "").is_retryable());
        assert!(!Error::new(ErrorKind::Backend, "").is_retryable());
        assert!(!Error::new(ErrorKind::Timeout, "")
            .with_retryable(false)
            .is_retryable());
    }
}
