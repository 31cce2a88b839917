//! Notices of committed changes between replicas: a write that replaces or
//! deletes a row other processes may hold a copy of sends `pg_notify` in its
//! own transaction (delivered only if it commits), and each process's `Feed`
//! listens on one connection. Payloads are one short line naming the row:
//! `t <repo> <tag>`, `m <repo> <digest>`, `b <repo> <digest>`, `a <go answer
//! key>`, `g <generation>`; anything else (one too long to send, one from a
//! newer version) reads as `*`, "drop every copy", which is always safe.

use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};

use crate::store::Change;
use crate::store::index::{Heard, IndexError};
use crate::store::{Digest, RepoKey};

/// The one channel every replica of a database listens on.
const CHANNEL: &str = "mirror_changes";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7999;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn payload(change: &Change) -> String {
    let line = match change {
        Change::Tag { repo, tag } => format!("t {repo} {tag}"),
        Change::Manifest { repo, digest } => format!("m {repo} {digest}"),
        Change::RepoBlob { repo, digest } => format!("b {repo} {digest}"),
        Change::Answer(key) => format!("a {key}"),
        Change::Generation(value) => format!("g {value}"),
        Change::Reset | Change::Expire => String::new(),
    };
    if line.is_empty() || line.len() > MAX_PAYLOAD {
        return "*".to_owned();
    }
    line
}

fn parse(payload: &str) -> Change {
    parse_known(payload).unwrap_or(Change::Reset)
}

fn parse_known(payload: &str) -> Option<Change> {
    let (kind, rest) = payload.split_once(' ')?;
    let repo_and = |rest: &str| {
        let (repo, item) = rest.split_once(' ')?;
        Some((RepoKey::new(repo.to_owned()), item.to_owned()))
    };
    let digest = |text: String| text.parse::<Digest>().ok();
    Some(match kind {
        "t" => {
            let (repo, tag) = repo_and(rest)?;
            Change::Tag { repo, tag }
        }
        "m" => {
            let (repo, item) = repo_and(rest)?;
            Change::Manifest {
                repo,
                digest: digest(item)?,
            }
        }
        "b" => {
            let (repo, item) = repo_and(rest)?;
            Change::RepoBlob {
                repo,
                digest: digest(item)?,
            }
        }
        "a" => Change::Answer(rest.to_owned()),
        "g" => Change::Generation(rest.parse().ok()?),
        _ => return None,
    })
}

/// Sends `change` from the transaction `conn` is in.
pub(super) async fn notify(conn: &mut PgConnection, change: &Change) -> Result<(), IndexError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload(change))
        .execute(conn)
        .await?;
    Ok(())
}

/// One process's listener: a connection of the pool held for `LISTEN`.
pub(crate) struct Feed {
    pool: PgPool,
    listener: Option<PgListener>,
    retry: Duration,
}

impl Feed {
    pub(super) fn new(pool: PgPool) -> Feed {
        Feed {
            pool,
            listener: None,
            retry: RETRY_FIRST,
        }
    }

    /// The next notice. `Missed` when the connection dropped and again once
    /// it listens anew (notices in between are lost); `Closed` when the pool
    /// is, at shutdown.
    pub(crate) async fn next(&mut self) -> Heard {
        let Some(listener) = self.listener.as_mut() else {
            return self.connect().await;
        };
        match listener.try_recv().await {
            Ok(Some(notice)) => Heard::Change(parse(notice.payload())),
            // The listener has reconnected and listens again already.
            Ok(None) => Heard::Missed,
            Err(sqlx::Error::PoolClosed) => Heard::Closed,
            Err(error) => {
                tracing::warn!(%error, "lost the index's change notices; caches are cleared");
                self.listener = None;
                Heard::Missed
            }
        }
    }

    async fn connect(&mut self) -> Heard {
        loop {
            let listening = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match listening.await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    self.retry = RETRY_FIRST;
                    return Heard::Missed;
                }
                Err(sqlx::Error::PoolClosed) => return Heard::Closed,
                Err(error) => {
                    tracing::warn!(%error, retry = ?self.retry, "cannot listen for the index's change notices");
                    tokio::time::sleep(self.retry).await;
                    self.retry = (self.retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notice_reads_back_as_it_was_sent() {
        let digest = Digest::sha256_of(b"m");
        let repo = || RepoKey::new("up.test/team/app".to_owned());
        for change in [
            Change::Tag {
                repo: repo(),
                tag: "v1.2".into(),
            },
            Change::Manifest {
                repo: repo(),
                digest: digest.clone(),
            },
            Change::RepoBlob {
                repo: repo(),
                digest,
            },
            Change::Answer("query example.com/m@latest v2".into()),
            Change::Generation(42),
        ] {
            assert_eq!(parse(&payload(&change)), change);
        }
    }

    #[test]
    fn what_cannot_be_read_or_sent_drops_every_copy() {
        for payload in ["*", "", "t onlyrepo", "m r sha256:zz", "g x", "z new kind"] {
            assert_eq!(parse(payload), Change::Reset, "{payload:?}");
        }
        let long = Change::Answer("k".repeat(MAX_PAYLOAD));
        assert_eq!(payload(&long), "*");
    }
}
