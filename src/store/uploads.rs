//! Push upload sessions that outlive the process: a row per session and its
//! bytes in `uploads/<id>`, so a chunked push resumes after a restart.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::db::now_secs;
use super::{Store, StoreError};

/// A session as the index last acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub repo_key: String,
    pub size: u64,
}

/// Upload ids are made here (32 lower-case hex) and are path components, so
/// anything else a client sends is no session at all.
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    /// Where the bytes of upload `id` live; `None` for a malformed id.
    pub fn upload_path(&self, id: &str) -> Option<PathBuf> {
        is_upload_id(id).then(|| self.inner.root.join("uploads").join(id))
    }

    pub async fn upload_begin(&self, id: &str, repo_key: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO uploads (id, repo_key, size, touched_at) VALUES (?1, ?2, 0, ?3)")
            .bind(id)
            .bind(repo_key)
            .bind(now_secs())
            .execute(&self.inner.db.write)
            .await?;
        Ok(())
    }

    /// Records that the session's file holds `size` good bytes.
    pub async fn upload_progress(&self, id: &str, size: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE uploads SET size = ?2, touched_at = ?3 WHERE id = ?1")
            .bind(id)
            .bind(size as i64)
            .bind(now_secs())
            .execute(&self.inner.db.write)
            .await?;
        Ok(())
    }

    pub async fn upload_find(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT repo_key, size FROM uploads WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.inner.db.read)
                .await?;
        Ok(row.map(|(repo_key, size)| UploadRow {
            repo_key,
            size: size.max(0) as u64,
        }))
    }

    /// Forgets a finished or cancelled session (its file is moved or removed
    /// by the caller).
    pub async fn upload_end(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM uploads WHERE id = ?1")
            .bind(id)
            .execute(&self.inner.db.write)
            .await?;
        Ok(())
    }

    /// Drops sessions untouched for `abandoned_after` with their files, rows
    /// whose file is gone, and files older than `min_age` that no row names.
    /// Returns how many sessions and files went.
    pub(crate) async fn sweep_uploads(
        &self,
        abandoned_after: Duration,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let cutoff = now_secs() - abandoned_after.as_secs() as i64;
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT id, touched_at FROM uploads")
            .fetch_all(&self.inner.db.read)
            .await?;
        let dir = self.inner.root.join("uploads");
        let (dead, leftovers) = tokio::task::spawn_blocking(move || {
            let named: std::collections::HashSet<&str> =
                rows.iter().map(|(id, _)| id.as_str()).collect();
            // A row is dead when stale, malformed (never a path then) or fileless.
            let dead: Vec<String> = rows
                .iter()
                .filter(|(id, touched_at)| {
                    *touched_at < cutoff || !is_upload_id(id) || !dir.join(id).is_file()
                })
                .map(|(id, _)| id.clone())
                .collect();
            let now = SystemTime::now();
            let mut leftovers = Vec::new();
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name();
                let old_enough =
                    entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|modified| {
                            now.duration_since(modified).unwrap_or_default() >= min_age
                        });
                if old_enough && !named.contains(name.to_string_lossy().as_ref()) {
                    leftovers.push(entry.path());
                }
            }
            if !dry_run {
                for id in dead.iter().filter(|id| is_upload_id(id)) {
                    let _ = std::fs::remove_file(dir.join(id));
                }
                leftovers.retain(|path| std::fs::remove_file(path).is_ok());
            }
            std::io::Result::Ok((dead, leftovers.len() as u64))
        })
        .await?
        .map_err(super::io_error("sweeping uploads"))?;
        if !dry_run {
            for id in &dead {
                self.upload_end(id).await?;
            }
        }
        Ok(dead.len() as u64 + leftovers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[tokio::test]
    async fn the_sweep_keeps_live_sessions_and_drops_abandoned_ones_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (live, stale, rowless, fileless) = (
            "a".repeat(32),
            "b".repeat(32),
            "c".repeat(32),
            "d".repeat(32),
        );
        for id in [&live, &stale, &fileless] {
            store.upload_begin(id, "team/app").await.unwrap();
        }
        for id in [&live, &stale, &rowless] {
            std::fs::write(store.upload_path(id).unwrap(), b"bytes").unwrap();
        }
        sqlx::query("UPDATE uploads SET touched_at = 0 WHERE id = ?1")
            .bind(&stale)
            .execute(&store.inner.db.write)
            .await
            .unwrap();

        assert_eq!(
            store.sweep_uploads(DAY, DAY, false).await.unwrap(),
            2,
            "stale and fileless"
        );
        assert_eq!(
            store
                .sweep_uploads(DAY, Duration::ZERO, true)
                .await
                .unwrap(),
            1,
            "dry run: rowless"
        );
        assert!(
            store.upload_path(&rowless).unwrap().exists(),
            "a dry run removes nothing"
        );
        assert_eq!(
            store
                .sweep_uploads(DAY, Duration::ZERO, false)
                .await
                .unwrap(),
            1
        );

        assert!(store.upload_path(&live).unwrap().exists());
        assert!(store.upload_find(&live).await.unwrap().is_some());
        for id in [&stale, &rowless, &fileless] {
            assert!(!store.upload_path(id).unwrap().exists(), "{id}");
            assert!(store.upload_find(id).await.unwrap().is_none(), "{id}");
        }
    }

    #[test]
    fn only_ids_this_server_makes_name_files() {
        assert!(is_upload_id(&"0f".repeat(16)));
        for id in ["", "../mirror.db", &"A".repeat(32), &"a".repeat(33), "a/b"] {
            assert!(!is_upload_id(id), "{id}");
        }
    }
}
