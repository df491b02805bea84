//! The account store's suite on SQLite (`store::suite`; PostgreSQL: tests/store_backends.rs).

use crate::store::{suite, SqlStore};

#[tokio::test]
async fn users_tokens_and_deletion() {
    suite::users_tokens_and_deletion(&SqlStore::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn audit_filters_and_pages() {
    suite::audit_filters_and_pages(&SqlStore::in_memory().await.unwrap()).await;
}
