//! One SQL surface over SQLite and PostgreSQL.
//!
//! Every store function is written once, in the SQL both engines accept:
//! `?N` placeholders (rewritten to `$N` for PostgreSQL), `RETURNING` instead
//! of `last_insert_rowid()`, `ON CONFLICT DO NOTHING` instead of
//! `INSERT OR IGNORE`, explicit `NULLS FIRST/LAST`, `CAST(?N AS TEXT)` where
//! a parameter's type is not told by the statement alone, integers (0/1) for
//! booleans, `lower(x) LIKE lower(?N)` for case-insensitive matching. Where
//! the two really differ, [`Conn::dialect`] picks the text.
//!
//! Why this seam rather than sqlx: the store runs synchronous code on its
//! database thread(s), one transaction per decision; sqlx would make every
//! store function async and its `Any` driver loses the types we bind. The
//! surface mirrors the part of rusqlite's API bty-web always used
//! (`prepare_cached(..)?.query_row(..)`, `params![]`, `.optional()`,
//! `row.get(i)`), so the store reads as it did. SQLite stays rusqlite on
//! one connection; PostgreSQL is the synchronous `postgres` client
//! (see [`pg`]), one connection per pool thread.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};

pub mod pg;

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Any integer (SQLite INTEGER, PostgreSQL BIGINT/INT/SMALLINT/BOOL).
    Int(i64),
    /// A float (REAL / DOUBLE PRECISION).
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// What a statement failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `query_row` found no row.
    #[error("the query returned no rows")]
    NoRows,
    /// A column held a value of another type (or an unknown enum spelling).
    #[error("column {column}: {message}")]
    Conversion {
        /// Column index or name.
        column: String,
        /// What was wrong.
        message: String,
    },
    /// A column name or index the row does not have.
    #[error("the row has no column {0}")]
    NoColumn(String),
    /// From SQLite.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// From PostgreSQL.
    #[error("PostgreSQL: {}", pg::describe(.0))]
    Postgres(#[from] postgres::Error),
    /// Anything else a backend reports (connection, unsupported use).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A conversion error for `column` (index or name).
    pub fn conversion(column: impl ToString, message: impl Into<String>) -> Error {
        Error::Conversion {
            column: column.to_string(),
            message: message.into(),
        }
    }
}

/// Result of a statement.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `query_row(..).optional()`: no row becomes `None`.
pub trait OptionalExtension<T> {
    /// `Err(NoRows)` becomes `Ok(None)`.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A Rust value that binds as a statement parameter.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                // u64/usize above i64::MAX do not occur in bty's data
                // (sizes, counts); saturate rather than wrap if one did.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// A Rust value a column converts into.
pub trait FromValue: Sized {
    /// Convert; `column` names the column in errors.
    fn from_value(v: &Value, column: &str) -> Result<Self>;
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a float",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value, column: &str) -> Result<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i)
                        .map_err(|_| Error::conversion(column, format!("{i} is out of range"))),
                    other => Err(Error::conversion(
                        column,
                        format!("expected an integer, found {}", type_name(other)),
                    )),
                }
            }
        }
    )*};
}
int_from_value!(i32, i64, u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: &Value, column: &str) -> Result<Self> {
        i64::from_value(v, column).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value, column: &str) -> Result<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            // SQLite stores a REAL column's whole numbers as integers.
            Value::Int(i) => Ok(*i as f64),
            other => Err(Error::conversion(
                column,
                format!("expected a number, found {}", type_name(other)),
            )),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value, column: &str) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(Error::conversion(
                column,
                format!("expected text, found {}", type_name(other)),
            )),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value, column: &str) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(Error::conversion(
                column,
                format!("expected bytes, found {}", type_name(other)),
            )),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value, _column: &str) -> Result<Self> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value, column: &str) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// One result row, detached from its statement.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// A row of `values` named `names` (backends build rows with this).
    pub fn new(names: Arc<[String]>, values: Vec<Value>) -> Row {
        Row { names, values }
    }

    /// Column `idx` (0-based index or name) as `T`.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index(&self.names)?;
        let name = self.names.get(i).map_or("?", String::as_str);
        T::from_value(self.value(i)?, name)
    }

    /// The raw value of column `idx`.
    pub fn value<I: RowIndex>(&self, idx: I) -> Result<&Value> {
        let i = idx.index(&self.names)?;
        self.values
            .get(i)
            .ok_or_else(|| Error::NoColumn(i.to_string()))
    }

    /// How many columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A column index: a position or a name.
pub trait RowIndex {
    /// The position of this column among `names`.
    fn index(&self, names: &[String]) -> Result<usize>;
}

impl RowIndex for usize {
    fn index(&self, names: &[String]) -> Result<usize> {
        if *self < names.len() {
            Ok(*self)
        } else {
            Err(Error::NoColumn(self.to_string()))
        }
    }
}

impl RowIndex for &str {
    fn index(&self, names: &[String]) -> Result<usize> {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(self))
            .ok_or_else(|| Error::NoColumn((*self).to_owned()))
    }
}

/// The parameters of one statement: `params![a, b]`, `[x]`, `[x, y]` or `()`.
pub trait Params {
    /// The values to bind, in order (`?1` first).
    fn values(self) -> Vec<Value>;
}

impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}

/// `params![a, b, c]`: parameters of mixed types.
#[macro_export]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::db::sql::ToValue] };
    ($($v:expr),+ $(,)?) => { &[$(&$v as &dyn $crate::db::sql::ToValue),+] as &[&dyn $crate::db::sql::ToValue] };
}
pub use crate::sql_params as params;

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (rusqlite, bundled).
    Sqlite,
    /// PostgreSQL 13 or newer.
    Postgres,
}

/// What a transaction serializes against. SQLite has one writer, so every
/// write lock is `BEGIN IMMEDIATE` there; on PostgreSQL the lock is an
/// advisory transaction lock so that replicas serialize exactly what one
/// SQLite writer serialized:
/// - [`Lock::Machine`]: decisions and reports of one MAC (exclusive per MAC,
///   shared against [`Lock::Global`]);
/// - [`Lock::Global`]: anything that counts or changes across machines
///   (discovery caps, settings, sticks, migrations): exclusive against all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// A read-only transaction (a consistent snapshot, no lock).
    Read,
    /// Serialized with every other transaction on this MAC.
    Machine(&'a str),
    /// Serialized with every other write.
    Global,
}

/// One database connection: SQLite or PostgreSQL.
pub struct Conn {
    backend: Backend,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    // RefCell: the postgres client needs `&mut` for every call, while the
    // store's functions share `&Conn` (as with rusqlite); one thread owns
    // a Conn, so the borrow is never contended.
    Postgres(RefCell<pg::Client>),
}

impl Conn {
    /// Wrap an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Conn {
        Conn {
            backend: Backend::Sqlite(conn),
        }
    }

    /// Connect to PostgreSQL at `url` (`postgres://user:pass@host:port/db`).
    pub fn postgres(url: &str) -> Result<Conn> {
        Ok(Conn {
            backend: Backend::Postgres(RefCell::new(pg::Client::connect(url)?)),
        })
    }

    /// The engine behind this connection.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for SQLite-only work (PRAGMAs, tests).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// A statement to run (cached by the backend).
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(Stmt {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match &self.backend {
            Backend::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(values.iter()))?),
            Backend::Postgres(c) => c.borrow_mut().execute(sql, &values),
        }
    }

    /// Run several `;`-separated statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(c) => c.borrow_mut().batch(sql),
        }
    }

    /// Every row of a query.
    pub fn query_rows<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        let values = params.values();
        match &self.backend {
            Backend::Sqlite(c) => sqlite_rows(c, sql, &values),
            Backend::Postgres(c) => c.borrow_mut().query(sql, &values),
        }
    }

    /// The first row of a query through `f`; [`Error::NoRows`] when empty.
    pub fn query_row<P, T, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row) -> Result<T>,
    {
        let rows = self.query_rows(sql, params)?;
        f(rows.first().ok_or(Error::NoRows)?)
    }

    /// Every row of a query through `f`. Rows are read in full first, so the
    /// iterator holds no statement (the same on both engines).
    pub fn query_map<P, T, F>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row) -> Result<T>,
    {
        let rows = self.query_rows(sql, params)?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    /// Whether a query returns any row.
    pub fn exists<P: Params>(&self, sql: &str, params: P) -> Result<bool> {
        Ok(!self.query_rows(sql, params)?.is_empty())
    }

    /// Start a transaction holding `lock` (see [`Lock`]); it rolls back
    /// unless [`Tx::commit`] is called.
    pub fn transaction(&mut self, lock: Lock<'_>) -> Result<Tx<'_>> {
        match &self.backend {
            Backend::Sqlite(c) => c.execute_batch(match lock {
                Lock::Read => "BEGIN DEFERRED",
                Lock::Machine(_) | Lock::Global => "BEGIN IMMEDIATE",
            })?,
            Backend::Postgres(c) => c.borrow_mut().begin(lock)?,
        }
        Ok(Tx {
            conn: self,
            done: false,
        })
    }

    fn finish(&self, commit: bool) -> Result<()> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(c) => c.borrow_mut().batch(sql),
        }
    }
}

/// A statement of a [`Conn`], as `prepare_cached` gives it: the same
/// methods as the connection, without the SQL argument.
pub struct Stmt<'c> {
    conn: &'c Conn,
    sql: String,
}

impl Stmt<'_> {
    /// [`Conn::execute`].
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    /// [`Conn::query_row`].
    pub fn query_row<P, T, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row) -> Result<T>,
    {
        self.conn.query_row(&self.sql, params, f)
    }

    /// [`Conn::query_map`].
    pub fn query_map<P, T, F>(&mut self, params: P, f: F) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row) -> Result<T>,
    {
        self.conn.query_map(&self.sql, params, f)
    }

    /// [`Conn::exists`].
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        self.conn.exists(&self.sql, params)
    }
}

/// An open transaction; derefs to its [`Conn`]. Dropped without
/// [`Tx::commit`], it rolls back.
pub struct Tx<'c> {
    conn: &'c mut Conn,
    done: bool,
}

impl Tx<'_> {
    /// Commit.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.finish(true)
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.conn.finish(false) {
                tracing::warn!("rolling back a transaction failed: {e}");
            }
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn sqlite_rows(c: &rusqlite::Connection, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
    let mut st = c.prepare_cached(sql)?;
    let names: Arc<[String]> = st.column_names().iter().map(|s| s.to_string()).collect();
    let n = names.len();
    let mut rows = st.query(rusqlite::params_from_iter(values.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(Row::new(names.clone(), vals));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::sqlite(rusqlite::Connection::open_in_memory().unwrap())
    }

    #[test]
    fn binds_reads_and_converts() {
        let c = conn();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, r REAL, n INTEGER)")
            .unwrap();
        let id: i64 = c
            .query_row(
                "INSERT INTO t (s, r, n) VALUES (?1, ?2, ?3) RETURNING id",
                params!["a", 1.5, None::<i64>],
                |r| r.get(0),
            )
            .unwrap();
        let (s, r, n): (String, f64, Option<u32>) = c
            .prepare_cached("SELECT s, r, n FROM t WHERE id = ?1")
            .unwrap()
            .query_row([id], |r| Ok((r.get(0)?, r.get("r")?, r.get(2)?)))
            .unwrap();
        assert_eq!((s.as_str(), r, n), ("a", 1.5, None));
        let e = c
            .query_row("SELECT s FROM t", (), |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(matches!(e, Error::Conversion { .. }), "{e}");
        let none = c
            .query_row("SELECT s FROM t WHERE id = 99", (), |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
        let mut c = conn();
        c.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        {
            let tx = c.transaction(Lock::Global).unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [1]).unwrap();
        }
        let tx = c.transaction(Lock::Machine("52:54:00:00:00:01")).unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [2]).unwrap();
        tx.commit().unwrap();
        let all: Vec<i64> = c
            .query_map("SELECT v FROM t", (), |r| r.get(0))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(all, vec![2]);
    }
}
