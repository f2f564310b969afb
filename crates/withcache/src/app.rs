//! The state of a running instance that the HTTP surfaces share.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::options::Options;
use crate::store::Store;

/// Shared state of a running instance.
pub(crate) struct App {
    pub store: Arc<Store>,
    pub catalog: Catalog,
    pub auth: Arc<bty_auth::Auth>,
    pub opts: Options,
}

impl App {
    pub fn db(&self) -> &crate::db::Db {
        self.store.db()
    }
}
