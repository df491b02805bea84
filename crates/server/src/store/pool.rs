//! Opening the database behind the stores: the embedded SQLite file (the default), a private
//! in-memory SQLite (tests) or PostgreSQL (`database_url`), all as one sqlx `AnyPool`, so every
//! store runs the same query text on both.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// The SQL dialect of a pool: the few statements that differ (identity columns, the database's
/// clock, row locks) ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database_url must start with postgres:// or postgresql:// (or be empty for the embedded SQLite), not {0:?}")]
    Scheme(String),
    #[error("cannot open the SQLite database {path}")]
    Sqlite {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to PostgreSQL at {target}")]
    Postgres {
        target: String,
        #[source]
        source: sqlx::Error,
    },
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// True for a `database_url` that names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `host:port/database` of a PostgreSQL URL: what error messages show (never the password).
pub fn shown_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}:{}{}", u.host_str().unwrap_or("localhost"), u.port().unwrap_or(5432), u.path()),
        Err(_) => "(an unparsable database_url)".into(),
    }
}

/// The SQLite file at `path` (created if needed): WAL, synchronous NORMAL, a 5 s busy timeout.
pub async fn sqlite_file(path: &Path) -> Result<AnyPool, OpenError> {
    install_drivers();
    let err = |source| OpenError::Sqlite { path: path.display().to_string(), source };
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // With WAL, NORMAL never corrupts the database; a power cut may lose the last
                // transactions, which a restart's reconcile fails anyway. One fsync less per change.
                sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(err)?;
    sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(err)?;
    Ok(pool)
}

/// A private in-memory SQLite database (tests). One connection: every connection to `:memory:`
/// is a separate database.
pub async fn sqlite_memory() -> Result<AnyPool, OpenError> {
    install_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect("sqlite::memory:")
        .await
        .map_err(|source| OpenError::Sqlite { path: ":memory:".into(), source })
}

/// PostgreSQL at `url`. Connections are checked before use, so a database that restarted is used
/// again as soon as it answers; a request waits at most 10 s for a connection.
pub async fn postgres(url: &str) -> Result<AnyPool, OpenError> {
    if !is_postgres_url(url) {
        return Err(OpenError::Scheme(url.split(':').next().unwrap_or("").to_string()));
    }
    install_drivers();
    AnyPoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect(url)
        .await
        .map_err(|source| OpenError::Postgres { target: shown_target(url), source })
}
