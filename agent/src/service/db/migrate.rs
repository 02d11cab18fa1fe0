//! Numbered schema migrations, applied in order under a session advisory lock, so that two
//! replicas starting together apply each exactly once. Each runs in its own transaction
//! with its row in `schema_migrations`.

use super::{Db, DbError};

/// `(version, SQL)`, in order. A shipped migration is never edited; a change is a new one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (
        2,
        include_str!("../migrations/0002_derived_proxy_token.sql"),
    ),
    (3, include_str!("../migrations/0003_attempts_by_node.sql")),
];

/// The advisory lock key that serialises migrations (any fixed number; "berth" in ASCII).
const LOCK: i64 = 0x0062_6572_7468;

/// Brings the schema up to the newest version; returns the versions applied now.
pub async fn run(db: &Db) -> Result<Vec<i32>, DbError> {
    let mut conn = db.conn().await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = apply(&mut conn).await;
    // Unlocked whatever happened; a dropped connection unlocks too.
    conn.execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
        .ok();
    result
}

async fn apply(conn: &mut deadpool_postgres::Object) -> Result<Vec<i32>, DbError> {
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: Vec<i32> = conn
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = vec![];
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let tx = conn.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "database schema migrated");
        applied.push(*version);
    }
    Ok(applied)
}
