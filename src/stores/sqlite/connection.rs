//! The connection threads (module docs, "Design"): opening the write and
//! read connections, the job queues that carry every call to them, and the
//! write thread's periodic sweep.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::error::{closed, sqlite_error};
use super::schema::{drop_legacy_index, Statements};
use super::SqliteKvStore;
use crate::error::{Error, ErrorKind, Result};
use crate::operation::Operation;
use crate::stores::sql::{self, now_ms};

/// A job for a connection thread.
pub(super) type Job = Box<dyn FnOnce(&mut Connection, &Statements) + Send>;

/// Starts a thread that opens a connection with `open`, reports the outcome
/// on the returned channel, then hands the connection to `serve`.
pub(super) fn spawn_connection(
    name: String,
    open: impl FnOnce() -> Result<(Connection, Statements)> + Send + 'static,
    serve: impl FnOnce(Connection, Statements) + Send + 'static,
) -> Result<(JoinHandle<()>, oneshot::Receiver<Result<()>>)> {
    let (ready, opened) = oneshot::channel::<Result<()>>();
    let thread = thread::Builder::new()
        .name(name)
        .spawn(move || match open() {
            Ok((conn, statements)) => {
                let _ = ready.send(Ok(()));
                serve(conn, statements);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        })
        .map_err(|e| {
            Error::new(ErrorKind::Backend, "cannot start the SQLite thread")
                .with_source(e)
                .with_operation(Operation::Connect)
        })?;
    Ok((thread, opened))
}

pub(super) async fn wait_opened(opened: oneshot::Receiver<Result<()>>) -> Result<()> {
    match opened.await {
        Ok(result) => result,
        Err(_) => Err(closed(Operation::Connect)),
    }
}

pub(super) fn connect(
    path: Option<&Path>,
    synchronous: &str,
    statements: &Statements,
) -> Result<Connection> {
    let conn = match path {
        Some(path) => Connection::open(path),
        None => Connection::open_in_memory(),
    }
    .map_err(|e| {
        let kind = ErrorKind::Unavailable;
        Error::new(kind, "cannot open the SQLite database")
            .with_source(e)
            .with_operation(Operation::Connect)
    })?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // Returns the mode ("memory" for an in-memory database).
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
        conn.execute_batch(&statements.create)?;
        drop_legacy_index(&conn, statements)
    };
    setup().map_err(sqlite_error)?;
    Ok(conn)
}

/// A read connection: the file exists, is in WAL mode and has the table.
pub(super) fn connect_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| {
        Error::new(ErrorKind::Unavailable, "cannot open the SQLite database")
            .with_source(e)
            .with_operation(Operation::Connect)
    })?;
    // A WAL read waits only in rare cases (a checkpoint resetting the log);
    // `query_only` makes sure no write ever takes this path.
    conn.busy_timeout(Duration::from_secs(5))
        .and_then(|()| conn.execute_batch("PRAGMA query_only = ON;"))
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// A read connection's thread: runs read jobs from the shared queue until it
/// closes. Several readers share the queue, so reads run in parallel.
pub(super) fn serve_reads(
    mut conn: Connection,
    statements: Statements,
    jobs: &Mutex<mpsc::Receiver<Job>>,
) {
    loop {
        // Only the reader holding the mutex waits on the queue (the others
        // wait for the mutex); the guard is released before the job runs.
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job(&mut conn, &statements);
    }
}

/// The connection thread: runs jobs in order, and sweeps expired rows every
/// `sweep_interval` (sooner while a sweep finds a full batch).
pub(super) fn serve(
    mut conn: Connection,
    statements: Statements,
    jobs: mpsc::Receiver<Job>,
    sweep_interval: Option<Duration>,
) {
    let mut next_sweep = sweep_interval.map(|every| Instant::now() + every);
    loop {
        let job = match next_sweep {
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
            Some(at) => match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some(job) = job {
            job(&mut conn, &statements);
        }
        if let (Some(at), Some(every)) = (next_sweep, sweep_interval) {
            if Instant::now() >= at {
                let full = match sweep_batch(&conn, &statements) {
                    Ok(deleted) => deleted == sql::SWEEP_BATCH,
                    Err(e) => {
                        tracing::warn!(error = %e, "kvtower: sweeping expired SQLite rows failed");
                        false
                    }
                };
                let wait = if full {
                    Duration::from_millis(10)
                } else {
                    every
                };
                next_sweep = Some(Instant::now() + wait);
            }
        }
    }
}

pub(super) fn sweep_batch(conn: &Connection, statements: &Statements) -> Result<usize> {
    let batch = i64::try_from(sql::SWEEP_BATCH).unwrap_or(i64::MAX);
    conn.prepare_cached(&statements.sweep)
        .and_then(|mut stmt| stmt.execute(params![now_ms(), batch]))
        .map_err(sqlite_error)
}

impl SqliteKvStore {
    /// Runs `f` on the write connection's thread and waits for its result.
    pub(super) async fn run<T, F>(&self, operation: Operation, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Statements) -> Result<T> + Send + 'static,
    {
        self.run_on(self.inner.jobs.as_ref(), operation, f).await
    }

    /// Runs the read-only `f` on a read connection (or on the write
    /// connection when there is none) and waits for its result.
    pub(super) async fn read<T, F>(&self, operation: Operation, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Statements) -> Result<T> + Send + 'static,
    {
        let queue = self.inner.reads.as_ref().or(self.inner.jobs.as_ref());
        self.run_on(queue, operation, f).await
    }

    pub(super) async fn run_on<T, F>(
        &self,
        queue: Option<&mpsc::Sender<Job>>,
        operation: Operation,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Statements) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, statements| {
            // The caller may have given up (its future dropped): nothing to do.
            let _ = tx.send(f(conn, statements));
        });
        let queue = queue.ok_or_else(|| closed(operation))?;
        queue.send(job).map_err(|_| closed(operation))?;
        rx.await.map_err(|_| closed(operation))?
    }
}
