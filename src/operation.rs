//! [`Operation`]: the name of every call a store, a layer or the cache-aside
//! front can fail in, written once for errors, metrics and the tower bridge.

use std::fmt;

/// Which call failed, or which call a metric counts: one variant per
/// [`KvStore`](crate::KvStore) method, plus the calls around them (opening a
/// store, sweeping expired entries, [`CacheAside::get_or_set`](crate::aside::CacheAside::get_or_set)).
///
/// [`as_str`](Self::as_str) is the name in error messages and the value of
/// the `operation` label of every metric.
///
/// New operations may be added in minor releases.
///
/// ```
/// use kvtower::{Error, ErrorKind, Operation};
///
/// let err = Error::new(ErrorKind::Timeout, "no answer").with_operation(Operation::GetMany);
/// assert_eq!(err.operation(), Some(Operation::GetMany));
/// assert_eq!(Operation::GetMany.to_string(), "get_many");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`KvStore::get`](crate::KvStore::get).
    Get,
    /// [`KvStore::get_with_ttl`](crate::KvStore::get_with_ttl).
    GetWithTtl,
    /// [`KvStore::get_shared`](crate::KvStore::get_shared).
    GetShared,
    /// [`KvStore::get_many`](crate::KvStore::get_many).
    GetMany,
    /// [`KvStore::get_many_with_ttl`](crate::KvStore::get_many_with_ttl).
    GetManyWithTtl,
    /// [`KvStore::set`](crate::KvStore::set).
    Set,
    /// [`KvStore::set_many`](crate::KvStore::set_many).
    SetMany,
    /// [`KvStore::delete`](crate::KvStore::delete).
    Delete,
    /// [`KvStore::delete_many`](crate::KvStore::delete_many).
    DeleteMany,
    /// [`KvStore::cas`](crate::KvStore::cas).
    Cas,
    /// [`KvStore::list`](crate::KvStore::list).
    List,
    /// Opening a store: connecting to its server, opening its file, creating
    /// its table.
    Connect,
    /// Deleting expired entries (a store's background or on-demand sweep).
    Sweep,
    /// [`CacheAside::get_or_set`](crate::aside::CacheAside::get_or_set): the
    /// loader, or the lease that elects it.
    GetOrSet,
}

impl Operation {
    /// The short, stable, lowercase name (the method's name), fit for a
    /// metric label.
    ///
    /// ```
    /// assert_eq!(kvtower::Operation::GetWithTtl.as_str(), "get_with_ttl");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::GetWithTtl => "get_with_ttl",
            Operation::GetShared => "get_shared",
            Operation::GetMany => "get_many",
            Operation::GetManyWithTtl => "get_many_with_ttl",
            Operation::Set => "set",
            Operation::SetMany => "set_many",
            Operation::Delete => "delete",
            Operation::DeleteMany => "delete_many",
            Operation::Cas => "cas",
            Operation::List => "list",
            Operation::Connect => "connect",
            Operation::Sweep => "sweep",
            Operation::GetOrSet => "get_or_set",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
