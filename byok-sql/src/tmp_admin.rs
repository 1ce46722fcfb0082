//! A stand-in [`StoreAdmin`](byok_core::StoreAdmin) for the SQL stores.

macro_rules! tmp_admin {
    ($name:ty, $backend:literal, $bound:literal) => {
        #[async_trait::async_trait]
        impl byok_core::StoreAdmin for $name {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> byok_core::Result<()> {
                <$name>::migrate(self).await
            }

            async fn schema_status(&self) -> byok_core::Result<byok_core::SchemaStatus> {
                let probe = format!("SELECT COUNT(*) FROM {} WHERE 1 = 0", self.table_name());
                match sqlx::query(sqlx::AssertSqlSafe(probe))
                    .execute(self.pool())
                    .await
                {
                    Ok(_) => Ok(byok_core::SchemaStatus::UpToDate),
                    Err(sqlx::Error::Database(db))
                        if matches!(db.code().as_deref(), Some("42P01" | "42S02" | "1146"))
                            || db.message().starts_with("no such table") =>
                    {
                        Ok(byok_core::SchemaStatus::Missing)
                    }
                    Err(e) => Err(byok_core::error::StorageError::new(
                        $backend,
                        byok_core::StorageErrorKind::Other,
                        "reading the schema failed",
                    )
                    .with_source(e)
                    .into()),
                }
            }

            async fn count_expired(&self) -> byok_core::Result<Option<u64>> {
                let count = format!(
                    "SELECT COUNT(*) FROM {} WHERE expires_at IS NOT NULL AND expires_at <= {}",
                    self.table_name(),
                    $bound
                );
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
                    .bind(chrono::Utc::now().timestamp_millis())
                    .fetch_one(self.pool())
                    .await
                    .map_err(|e| {
                        byok_core::error::StorageError::new(
                            $backend,
                            byok_core::StorageErrorKind::Other,
                            "counting expired keys failed",
                        )
                        .with_source(e)
                    })?;
                Ok(Some(u64::try_from(n).unwrap_or(0)))
            }

            async fn destroy(&self) -> byok_core::Result<()> {
                let drop = format!("DROP TABLE IF EXISTS {}", self.table_name());
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(self.pool())
                    .await
                    .map_err(|e| {
                        byok_core::error::StorageError::new(
                            $backend,
                            byok_core::StorageErrorKind::Other,
                            "dropping the table failed",
                        )
                        .with_source(e)
                    })?;
                Ok(())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
tmp_admin!(crate::SqliteStorage, "sqlite", "?");
#[cfg(feature = "postgres")]
tmp_admin!(
    crate::PostgresStorage,
    "postgres",
    "to_timestamp($1::bigint / 1000.0)"
);
#[cfg(feature = "mysql")]
tmp_admin!(crate::MySqlStorage, "mysql", "?");
