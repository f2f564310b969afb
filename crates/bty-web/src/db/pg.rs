//! The PostgreSQL backend of [`super::sql`]: the synchronous `postgres`
//! client, statements prepared once per connection, `?N` rewritten to `$N`,
//! values converted to and from the column types PostgreSQL reports.

use super::sql::{Error, Lock, Result, Row, Value};

/// One PostgreSQL connection.
pub struct Client {
    _private: (),
}

impl Client {
    /// Connect to `url` (`postgres://user:pass@host:port/db`).
    pub fn connect(url: &str) -> Result<Client> {
        let _ = url;
        Err(Error::Other(
            "this bty-web was built without PostgreSQL support; use SQLite \
             (leave [server] database unset)"
                .into(),
        ))
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, values: &[Value]) -> Result<usize> {
        let _ = (sql, values);
        unreachable!("no Client is ever built")
    }

    /// Every row of a query.
    pub fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let _ = (sql, values);
        unreachable!("no Client is ever built")
    }

    /// Several `;`-separated statements, no parameters.
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        let _ = sql;
        unreachable!("no Client is ever built")
    }

    /// `BEGIN` and take `lock` (see [`Lock`]).
    pub fn begin(&mut self, lock: Lock<'_>) -> Result<()> {
        let _ = lock;
        unreachable!("no Client is ever built")
    }
}

/// PostgreSQL's schema migrations, one per SQLite migration in
/// [`super::schema::MIGRATIONS`] (same tables, columns and meaning), with
/// the version kept in a `bty_schema` table under a session advisory lock so
/// that replicas starting together migrate once.
pub const MIGRATIONS: &[&str] = &[];

/// Bring a PostgreSQL database to schema version `target`.
pub fn migrate(conn: &super::sql::Conn, target: u32) -> anyhow::Result<()> {
    let _ = (conn, target);
    anyhow::bail!("PostgreSQL migrations are not built yet")
}

/// The schema version of a PostgreSQL database.
// Stub added by the port of the store (helper "port") so that
// `schema::version` compiles; the PostgreSQL backend replaces it.
pub fn version(conn: &super::sql::Conn) -> anyhow::Result<u32> {
    let _ = conn;
    anyhow::bail!("PostgreSQL migrations are not built yet")
}
