//! The PostgreSQL backend of [`super`] (`db::sql`): the synchronous `postgres`
//! client, statements prepared once per connection, `?N` rewritten to `$N`,
//! values converted to and from the column types PostgreSQL reports.
//!
//! Connections are plain TCP or a Unix socket (`NoTls`): TLS to the
//! database is not supported yet, so keep PostgreSQL on loopback, a
//! private network or a socket.
//!
//! Locks ([`Lock`]) are advisory transaction locks, released by `COMMIT` or
//! `ROLLBACK`:
//! - bigint key 0: shared by every [`Lock::Machine`], exclusive for
//!   [`Lock::Global`];
//! - two-int keys `(1, hashtext(mac))`: exclusive per MAC (two MACs whose
//!   hashes collide only wait for each other, never decide wrongly);
//! - bigint key 2: a session lock around [`migrate`].
//!
//! Locked transactions run at READ COMMITTED on purpose: each statement
//! after the lock sees everything the previous holder committed. REPEATABLE
//! READ would take its snapshot at the lock statement, before the wait, and
//! decide on stale rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{NoTls, Statement};

use super::{Conn, Dialect, Error, Lock, Result, Row, Value};

/// One PostgreSQL connection.
pub struct Client {
    // Boxed: the client is large and sits in an enum beside rusqlite's. An
    // Option only so that `Drop` can move it off an async thread.
    inner: Option<Box<postgres::Client>>,
    /// To connect again after the connection was lost (boxed: large).
    cfg: Box<postgres::Config>,
    /// Prepared statements by their SQL text as the store wrote it (`?N`).
    cache: HashMap<String, Prepared>,
    /// Between `BEGIN` and `COMMIT`/`ROLLBACK`: a lost connection is then
    /// an error until the transaction ends, never a silent reconnect (the
    /// rest of the transaction would run outside it).
    in_tx: bool,
    /// A statement failed because the connection went (see [`gone`]); the
    /// client may not have noticed yet, so `is_closed` alone would let the
    /// next statement fail on the same dead socket.
    broken: bool,
}

struct Prepared {
    stmt: Statement,
    names: Arc<[String]>,
}

/// How long a connection attempt may take unless the URL says
/// (`connect_timeout=`): a database that does not answer should fail the
/// start with a message, not hang it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connect to `url` (`postgres://user:pass@host:port/db`, or the
    /// `host=... dbname=...` form). No TLS.
    pub fn connect(url: &str) -> Result<Client> {
        let mut cfg: postgres::Config = url.parse()?;
        if cfg.get_application_name().is_none() {
            cfg.application_name("bty-web");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        let c = cfg.clone();
        let inner = off_runtime(move || c.connect(NoTls))?;
        Ok(Client {
            inner: Some(Box::new(inner)),
            cfg: Box::new(cfg),
            cache: HashMap::new(),
            in_tx: false,
            broken: false,
        })
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, values: &[Value]) -> Result<usize> {
        let (stmt, _) = self.prepare(sql)?;
        let params = bind(&stmt, values, sql)?;
        let n = self.call(|c| c.execute(&stmt, &as_refs(&params)))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Every row of a query.
    pub fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let (stmt, names) = self.prepare(sql)?;
        let params = bind(&stmt, values, sql)?;
        let rows = self.call(|c| c.query(&stmt, &as_refs(&params)))?;
        rows.iter()
            .map(|r| {
                let vals = (0..r.len())
                    .map(|i| read(r, i))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Row::new(names.clone(), vals))
            })
            .collect()
    }

    /// Several `;`-separated statements, no parameters (the simple query
    /// protocol: `?` is not rewritten here).
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        let word = sql.trim();
        let end = matches!(word, "COMMIT" | "ROLLBACK");
        if end {
            self.in_tx = false;
            if self.closed() {
                // The server rolled the transaction back when the
                // connection went; a COMMIT must not look like it worked.
                return match word {
                    "COMMIT" => Err(lost("the transaction was not committed")),
                    _ => Ok(()),
                };
            }
        }
        self.call(|c| c.batch_execute(sql))?;
        if word.starts_with("BEGIN") {
            self.in_tx = true;
        } else if !end {
            // DDL may change what a cached statement returns ("cached
            // plan must not change result type"); statements are cheap to
            // prepare again, and such batches are rare.
            self.cache.clear();
        }
        Ok(())
    }

    /// `BEGIN` and take `lock` (see [`Lock`] and this module's docs). On
    /// failure the transaction is rolled back, so the connection is usable.
    pub fn begin(&mut self, lock: Lock<'_>) -> Result<()> {
        match lock {
            Lock::Read => self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            Lock::Machine(mac) => self.begin_locked(
                "SELECT pg_advisory_xact_lock_shared(0), \
                 pg_advisory_xact_lock(1, hashtext(?1))",
                &[Value::Text(mac.to_owned())],
            ),
            Lock::Global => self.begin_locked("SELECT pg_advisory_xact_lock(0)", &[]),
        }
    }

    fn begin_locked(&mut self, lock_sql: &str, values: &[Value]) -> Result<()> {
        self.batch("BEGIN")?;
        if let Err(e) = self.execute(lock_sql, values) {
            if let Err(r) = self.batch("ROLLBACK") {
                tracing::warn!("rolling back after a failed lock: {r}");
            }
            return Err(e);
        }
        Ok(())
    }

    fn closed(&self) -> bool {
        self.broken || self.inner.as_ref().is_none_or(|c| c.is_closed())
    }

    /// Run `f` on the connection (off the runtime), remembering when it
    /// failed because the connection went.
    fn call<T: Send>(
        &mut self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        let inner = self.inner()?;
        let out = off_runtime(|| f(inner));
        if let Err(e) = &out {
            if gone(e) {
                self.broken = true;
            }
        }
        Ok(out?)
    }

    /// The connection; a lost one (the server restarted, a network cut)
    /// is opened again here, outside a transaction. The statement that
    /// found it lost has failed already; nothing is retried, as it may
    /// have run.
    fn inner(&mut self) -> Result<&mut postgres::Client> {
        if self.closed() {
            if self.in_tx {
                return Err(lost("the transaction is rolled back"));
            }
            let cfg = self.cfg.as_ref().clone();
            let fresh = off_runtime(move || cfg.connect(NoTls))?;
            if let Some(old) = self.inner.replace(Box::new(fresh)) {
                off_runtime(move || drop(old));
            }
            self.cache.clear();
            self.broken = false;
            tracing::info!("connected to PostgreSQL again after losing the connection");
        }
        self.inner
            .as_deref_mut()
            .ok_or_else(|| lost("no connection"))
    }

    fn prepare(&mut self, sql: &str) -> Result<(Statement, Arc<[String]>)> {
        if let Some(p) = self.cache.get(sql) {
            return Ok((p.stmt.clone(), p.names.clone()));
        }
        let text = placeholders(sql);
        let stmt = self.call(|c| c.prepare(&text))?;
        let names: Arc<[String]> = stmt.columns().iter().map(|c| c.name().into()).collect();
        self.cache.insert(
            sql.to_owned(),
            Prepared {
                stmt: stmt.clone(),
                names: names.clone(),
            },
        );
        Ok((stmt, names))
    }
}

/// Whether `e` means the connection is gone rather than the statement
/// failed: a socket error, the server ending the session (`FATAL`, such as
/// `57P01` admin shutdown on a restart or `pg_terminate_backend`), or a
/// connection-exception SQLSTATE (class `08`).
fn gone(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        return db.severity() == "FATAL"
            || db.severity() == "PANIC"
            || db.code().code().starts_with("08");
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

fn lost(what: &str) -> Error {
    Error::Other(format!(
        "PostgreSQL: the connection to the database was lost; {what}"
    ))
}

impl Drop for Client {
    // Closing the connection blocks on the client's runtime too (see
    // [`off_runtime`]).
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            off_runtime(move || drop(inner));
        }
    }
}

/// Run `f` where the `postgres` client may block: it drives its own
/// runtime, and tokio refuses to start one on a thread that is already
/// running async code (a test calling the store from `#[tokio::test]`,
/// a `block_on` caller). There `f` runs on a short-lived scoped thread;
/// on the store's database threads it runs in place.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

/// Rewrite the store's `?N` placeholders to PostgreSQL's `$N`, leaving
/// `?` alone inside string literals (`'...'`, `E'...'`, `$tag$...$tag$`),
/// quoted identifiers and comments. A hand-written scanner: it is small,
/// and no SQL crate rewrites placeholders without parsing (and rejecting)
/// the dialect bits we use.
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        match c {
            '\'' | '"' => {
                // E'..' strings allow backslash escapes (an identifier
                // ending in E before a quote is not one).
                let mut before = out.chars().rev();
                let backslash = c == '\''
                    && matches!(before.next(), Some('E' | 'e'))
                    && !before.next().is_some_and(is_ident);
                out.push(c);
                while let Some((_, d)) = chars.next() {
                    out.push(d);
                    if backslash && d == '\\' {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        // A doubled quote is an escaped quote.
                        match chars.next_if(|&(_, n)| n == c) {
                            Some(_) => out.push(c),
                            None => break,
                        }
                    }
                }
            }
            '-' if next == Some('-') => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if next == Some('*') => {
                out.push(c);
                let mut last = ' ';
                // Skip the `*` that opens, so `/*/` does not close.
                if let Some((_, d)) = chars.next() {
                    out.push(d);
                }
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
            }
            '$' if !out.chars().next_back().is_some_and(is_ident) => {
                // `$tag$ ... $tag$` (the tag empty or an identifier) is
                // copied whole; `$1` is a parameter already.
                let rest = sql.get(i + 1..).unwrap_or("");
                let tag_len = if rest.starts_with(|d: char| d.is_ascii_digit()) {
                    None
                } else {
                    rest.find(|d: char| !is_ident(d))
                        .filter(|&p| rest.get(p..).is_some_and(|r| r.starts_with('$')))
                };
                match tag_len.and_then(|n| sql.get(i..i + n + 2)) {
                    Some(tag) => {
                        let body = i + tag.len();
                        let end = sql
                            .get(body..)
                            .and_then(|b| b.find(tag))
                            .map_or(sql.len(), |p| body + p + tag.len());
                        out.push_str(sql.get(i..end).unwrap_or_default());
                        while chars.next_if(|&(j, _)| j < end).is_some() {}
                    }
                    None => out.push(c),
                }
            }
            '?' if next.is_some_and(|d| d.is_ascii_digit()) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// One parameter, already in the Rust type its PostgreSQL type takes.
#[derive(Debug)]
enum Param<'a> {
    Null,
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::I16(v) => v.to_sql(ty, out),
            Param::I32(v) => v.to_sql(ty, out),
            Param::I64(v) => v.to_sql(ty, out),
            Param::F32(v) => v.to_sql(ty, out),
            Param::F64(v) => v.to_sql(ty, out),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Bytes(v) => v.to_sql(ty, out),
        }
    }

    // [`bind`] already picked the variant from the statement's parameter
    // type, so every type it lets through is accepted.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn as_refs<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Convert `values` to the types `stmt`'s parameters have.
fn bind<'v>(stmt: &Statement, values: &'v [Value], sql: &str) -> Result<Vec<Param<'v>>> {
    let types = stmt.params();
    if types.len() != values.len() {
        return Err(Error::Other(format!(
            "the statement takes {} parameter(s) but {} were bound: {}",
            types.len(),
            values.len(),
            short(sql)
        )));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (ty, v))| param(ty, v).map_err(|why| bind_error(i + 1, ty, v, why, sql)))
        .collect()
}

fn param<'v>(ty: &Type, v: &'v Value) -> std::result::Result<Param<'v>, &'static str> {
    let out_of_range = "it is out of range for the column";
    Ok(match (v, ty) {
        (Value::Null, _) => Param::Null,
        (Value::Int(i), &Type::INT2) => Param::I16(i16::try_from(*i).map_err(|_| out_of_range)?),
        (Value::Int(i), &Type::INT4) => Param::I32(i32::try_from(*i).map_err(|_| out_of_range)?),
        (Value::Int(i), &Type::INT8) => Param::I64(*i),
        (Value::Int(i), &Type::FLOAT4) => Param::F32(*i as f32),
        (Value::Int(i), &Type::FLOAT8) => Param::F64(*i as f64),
        (Value::Int(i), &Type::BOOL) => Param::Bool(*i != 0),
        (Value::Real(f), &Type::FLOAT4) => Param::F32(*f as f32),
        (Value::Real(f), &Type::FLOAT8) => Param::F64(*f),
        (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
            Param::Text(s)
        }
        (Value::Blob(b), &Type::BYTEA) => Param::Bytes(b),
        _ => return Err("the types do not match"),
    })
}

fn bind_error(n: usize, ty: &Type, v: &Value, why: &str, sql: &str) -> Error {
    let bound = match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a float",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    Error::Other(format!(
        "parameter ?{n} is {bound} but PostgreSQL takes it as {ty} ({why}); bind the \
         column's type, or CAST(?{n} AS ...) in the SQL where PostgreSQL cannot tell the \
         type: {}",
        short(sql)
    ))
}

/// The start of `sql`, one line, for error messages.
fn short(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &one[..i]),
        None => one,
    }
}

/// Column `i` of `row` as a [`Value`].
fn read(row: &postgres::Row, i: usize) -> Result<Value> {
    let col = row
        .columns()
        .get(i)
        .ok_or_else(|| Error::NoColumn(i.to_string()))?;
    let ty = col.type_();
    let v = match *ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Real(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        // What `SELECT pg_advisory_xact_lock(..)` returns.
        Type::VOID => None,
        Type::NUMERIC => {
            return Err(Error::conversion(
                col.name(),
                "PostgreSQL returned NUMERIC (a sum or an average of integers): \
                 CAST it AS BIGINT or AS DOUBLE PRECISION in the SQL",
            ))
        }
        _ => {
            return Err(Error::conversion(
                col.name(),
                format!(
                    "PostgreSQL returned type {ty}, which bty's store does not read: CAST it \
                     AS BIGINT, DOUBLE PRECISION or TEXT in the SQL"
                ),
            ))
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// What a `postgres` error says, whole: its own text hides the server's
/// message (and a connection error's cause) in `source()`.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(d) = db.detail() {
            s.push_str(&format!("; DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; HINT: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// PostgreSQL's schema migrations, one per SQLite migration in
/// [`crate::db::schema::MIGRATIONS`] (same tables, columns, indexes and
/// meaning): integers are BIGINT, REAL is DOUBLE PRECISION, ids are
/// identity columns. Migration 3 is only its ADD COLUMN: the side table it
/// folds in on SQLite never existed on PostgreSQL.
pub const MIGRATIONS: &[&str] = &[
    // 1: machines, labels, events.
    "CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        name TEXT,
        boot_mode TEXT NOT NULL,
        image TEXT,
        target_disk_serial TEXT,
        sanboot_drive TEXT,
        discovered_at TEXT,
        last_seen_at TEXT,
        last_seen_ip TEXT,
        inventory TEXT,
        inventory_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE machine_labels (
        mac TEXT NOT NULL REFERENCES machines(mac) ON DELETE CASCADE,
        label TEXT NOT NULL,
        PRIMARY KEY (mac, label)
    );
    CREATE TABLE events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        mac TEXT,
        summary TEXT NOT NULL,
        details TEXT
    );
    CREATE INDEX events_mac_idx ON events(mac, id);",
    // 2: flash cycles, arming generations, parking, inventory alternation.
    "ALTER TABLE machines ADD COLUMN arm_gen BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE machines ADD COLUMN parked_reason TEXT;
    ALTER TABLE machines ADD COLUMN parked_at TEXT;
    ALTER TABLE machines ADD COLUMN inventory_local_next BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE cycles (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        mac TEXT NOT NULL,
        arm_gen BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        token TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        boot_mode TEXT NOT NULL,
        image_name TEXT NOT NULL,
        image_url TEXT NOT NULL,
        image_sha256 TEXT,
        image_size BIGINT,
        image_format TEXT NOT NULL,
        target_serial TEXT NOT NULL,
        local_served BIGINT NOT NULL DEFAULT 0,
        offered_at TEXT NOT NULL,
        booted_at TEXT,
        flashing_at TEXT,
        finished_at TEXT,
        bytes_done BIGINT,
        bytes_total BIGINT,
        phase TEXT,
        rate DOUBLE PRECISION,
        progress_at TEXT,
        ok BIGINT,
        reason TEXT,
        disk_sha256 TEXT,
        duration_s DOUBLE PRECISION
    );
    CREATE INDEX cycles_mac_idx ON cycles(mac, arm_gen, id);
    CREATE INDEX events_kind_idx ON events(kind, id);",
    // 3: event acknowledgements become a column of the event.
    "ALTER TABLE events ADD COLUMN acked_at TEXT;",
    // 4: the address that booted a cycle.
    "ALTER TABLE cycles ADD COLUMN booted_ip TEXT;",
    // 5: the address a cycle was offered to.
    "ALTER TABLE cycles ADD COLUMN offered_ip TEXT;",
    // 6: USB-stick keys (only their sha256) and stick cycles.
    "CREATE TABLE sticks (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        label TEXT NOT NULL,
        key_sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        last_ip TEXT,
        revoked_at TEXT
    );
    ALTER TABLE cycles ADD COLUMN via TEXT NOT NULL DEFAULT 'pxe';
    ALTER TABLE cycles ADD COLUMN image_source TEXT;
    CREATE INDEX cycles_via_idx ON cycles(mac, via, id);",
];

/// The session advisory lock key every replica's [`migrate`] takes.
const MIGRATE_LOCK: i64 = 2;

/// Bring a PostgreSQL database to schema version `target`, each step in
/// its own transaction with the version bump, all of it under a session
/// advisory lock so that replicas starting together migrate once (the
/// others wait, then find the work done).
pub fn migrate(conn: &Conn, target: u32) -> anyhow::Result<()> {
    if conn.dialect() != Dialect::Postgres {
        bail!("pg::migrate needs a PostgreSQL connection");
    }
    conn.execute("SELECT pg_advisory_lock(?1)", [MIGRATE_LOCK])
        .context("waiting for the schema migration lock")?;
    let res = migrate_locked(conn, target);
    if let Err(e) = conn.execute("SELECT pg_advisory_unlock(?1)", [MIGRATE_LOCK]) {
        // The lock is the session's: closing the connection frees it too.
        tracing::warn!("releasing the schema migration lock: {e}");
    }
    res
}

fn migrate_locked(conn: &Conn, target: u32) -> anyhow::Result<()> {
    let latest = MIGRATIONS.len() as u32;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS bty_schema (version BIGINT NOT NULL)")
        .context("creating the bty_schema table")?;
    let current = version(conn)?;
    if current > latest {
        bail!(
            "the database has schema version {current} but this bty-web knows only up to \
             {latest}: it was written by a newer bty-web. Run that version (or newer); the \
             database was left untouched"
        );
    }
    if current == 0 {
        let foreign: i64 = conn.query_row(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name <> 'bty_schema'",
            (),
            |r| r.get(0),
        )?;
        if foreign > 0 {
            bail!(
                "the database already holds {foreign} table(s) but no bty-web schema version. \
                 It was left untouched; point [server] database at an empty database"
            );
        }
    }
    for v in current..target {
        let Some(sql) = MIGRATIONS.get(v as usize) else {
            bail!(
                "no migration to schema version {} (this build knows {latest})",
                v + 1
            );
        };
        let step = (|| -> Result<()> {
            conn.execute_batch("BEGIN")?;
            conn.execute_batch(sql)?;
            conn.execute("DELETE FROM bty_schema", ())?;
            conn.execute("INSERT INTO bty_schema (version) VALUES (?1)", [v + 1])?;
            conn.execute_batch("COMMIT")
        })();
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e)
                .with_context(|| format!("migrating the database to schema version {}", v + 1));
        }
        if v > 0 || current > 0 {
            tracing::info!("database migrated to schema version {}", v + 1);
        }
    }
    Ok(())
}

/// The schema version of a PostgreSQL database (0 when bty-web never
/// migrated it).
pub fn version(conn: &Conn) -> anyhow::Result<u32> {
    let table: Option<String> =
        conn.query_row("SELECT CAST(to_regclass('bty_schema') AS TEXT)", (), |r| {
            r.get(0)
        })?;
    if table.is_none() {
        return Ok(0);
    }
    let v: Option<i64> = conn.query_row("SELECT max(version) FROM bty_schema", (), |r| r.get(0))?;
    let v = v.unwrap_or(0);
    u32::try_from(v).with_context(|| format!("bty_schema holds version {v}, out of range"))
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn question_marks_become_dollars_outside_quotes_and_comments() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10)"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10)"
        );
        assert_eq!(
            placeholders("SELECT '?1', \"?2\", ?3, 'it''s ?4', E'\\' ?5', ?6"),
            "SELECT '?1', \"?2\", $3, 'it''s ?4', E'\\' ?5', $6"
        );
        assert_eq!(
            placeholders("SELECT ?1 -- ?2\n, /* ?3 */ ?4"),
            "SELECT $1 -- ?2\n, /* ?3 */ $4"
        );
        assert_eq!(
            placeholders("SELECT $$ ?1 $$, $q$ ?2 $q$, $3, ?4"),
            "SELECT $$ ?1 $$, $q$ ?2 $q$, $3, $4"
        );
        // A lone `?` (a jsonb operator) and non-ASCII text pass through.
        assert_eq!(
            placeholders("SELECT x ? 'k', 'é?1' , ?1"),
            "SELECT x ? 'k', 'é?1' , $1"
        );
        // A name ending in E before a quote is not an E'' string.
        assert_eq!(placeholders("SELECT type'\\', ?1"), "SELECT type'\\', $1");
    }

    #[test]
    fn unterminated_quotes_are_copied_not_rewritten() {
        assert_eq!(placeholders("SELECT 'open ?1"), "SELECT 'open ?1");
        assert_eq!(placeholders("SELECT /* open ?1"), "SELECT /* open ?1");
    }

    #[test]
    fn there_is_a_postgresql_migration_for_every_sqlite_one() {
        assert_eq!(super::MIGRATIONS.len(), crate::db::schema::MIGRATIONS.len());
    }
}
