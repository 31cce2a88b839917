//! What a request holds of one push session, and only while it runs: a
//! turn (one request per session at a time), the session's row, and the
//! store's handle on its file, opened after the acknowledged bytes with the
//! hash state that goes with them. Nothing here outlives the request.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use super::upload_unknown;
use crate::auth::Identity;
use crate::config::RegistryConfig;
use crate::oci::names::Repo;
use crate::oci::request_body::BodyReader;
use crate::oci::{Code, OciError, Registry};
use crate::store::{UploadFile, UploadId, UploadOwner, UploadRow};
use crate::sync::Unpoisoned;

pub struct Uploads {
    /// Sessions a request is working on right now. A second request on a busy
    /// session is refused, not queued: a client waits for each chunk's answer
    /// before it sends the next, and a queue is something a hostile one builds.
    busy: Mutex<HashSet<UploadId>>,
    pub(super) quota: u32,
}

impl Uploads {
    pub fn new(config: &RegistryConfig) -> Uploads {
        Uploads {
            busy: Mutex::default(),
            quota: config.max_upload_sessions_per_identity,
        }
    }

    pub(super) fn turn(&self, id: &UploadId) -> Result<Turn<'_>, OciError> {
        let mut busy = self.busy.lock().unpoisoned();
        if !busy.insert(id.clone()) {
            return Err(OciError::new(
                Code::TooManyRequests,
                "another request on this upload session is in progress",
            ));
        }
        Ok(Turn {
            uploads: self,
            id: id.clone(),
        })
    }
}

/// A request's hold on one session, given back when dropped (however the
/// request ends: a client that goes away drops it too).
pub(super) struct Turn<'a> {
    uploads: &'a Uploads,
    id: UploadId,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.uploads.busy.lock().unpoisoned().remove(&self.id);
    }
}

/// The owner of a caller's sessions. A certificate and a password are
/// different identities even under one name. Anonymous writers (only where
/// writes are open to them) are told apart by address, an IPv6 host by its
/// /64, which one host usually holds whole.
pub fn owner_of(identity: &Identity, peer: IpAddr) -> UploadOwner {
    UploadOwner::new(match identity {
        Identity::Cert { cn, .. } => format!("cert:{cn}"),
        Identity::User(user) => format!("user:{user}"),
        Identity::Anonymous => match peer.to_canonical() {
            IpAddr::V4(v4) => format!("anonymous:{v4}"),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("anonymous:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    })
}

/// The session a request names, and who is asking for it.
pub(super) struct Session<'a> {
    pub(super) registry: &'a Registry,
    pub(super) repo: &'a Repo,
    owner: &'a UploadOwner,
    pub(super) id: &'a UploadId,
}

impl<'a> Session<'a> {
    pub(super) fn named(
        registry: &'a Registry,
        repo: &'a Repo,
        owner: &'a UploadOwner,
        id: &'a UploadId,
    ) -> Session<'a> {
        Session {
            registry,
            repo,
            owner,
            id,
        }
    }

    /// The session's row, if it is this repository's and this caller's.
    pub(super) async fn row(&self) -> Result<UploadRow, OciError> {
        let row = self.registry.store.uploads().find(self.id).await?;
        row.filter(|row| row.repo_key == self.repo.key && row.owner == *self.owner)
            .ok_or_else(upload_unknown)
    }

    /// The session's file after its acknowledged bytes, and their hash.
    pub(super) async fn open(&self, row: &UploadRow) -> Result<UploadFile, OciError> {
        let uploads = self.registry.store.uploads();
        let Some(file) = uploads.resume(self.id, row).await? else {
            tracing::warn!(
                upload = %self.id,
                "an upload session's bytes are gone; dropping it"
            );
            self.end().await?;
            return Err(upload_unknown());
        };
        Ok(file)
    }

    /// Forgets the session and its file.
    pub(super) async fn end(&self) -> Result<(), OciError> {
        self.registry.store.uploads().end(self.id).await?;
        Ok(())
    }
}

/// Streams a request body onto the end of an upload's file.
pub(super) async fn receive(file: &mut UploadFile, mut body: BodyReader) -> Result<(), OciError> {
    while let Some(data) = body.next().await? {
        file.write(&data).await?;
    }
    file.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_a_name_of_one_kind_or_an_anonymous_network() {
        let owner = |identity: &Identity, peer: &str| owner_of(identity, peer.parse().unwrap());
        let cert = |serial: &str| Identity::Cert {
            cn: "alice".into(),
            serial: serial.into(),
        };
        let user = Identity::User("alice".into());
        assert_eq!(
            owner(&cert("01"), "10.0.0.1"),
            owner(&cert("02"), "10.0.0.2")
        );
        assert_ne!(owner(&cert("01"), "10.0.0.1"), owner(&user, "10.0.0.1"));
        let anonymous = Identity::Anonymous;
        assert_ne!(owner(&anonymous, "10.0.0.1"), owner(&anonymous, "10.0.0.2"));
        assert_eq!(
            owner(&anonymous, "::ffff:10.0.0.1"),
            owner(&anonymous, "10.0.0.1")
        );
        assert_eq!(
            owner(&anonymous, "2001:db8:1:2::1"),
            owner(&anonymous, "2001:db8:1:2:ffff::9")
        );
        assert_ne!(
            owner(&anonymous, "2001:db8:1:2::1"),
            owner(&anonymous, "2001:db8:1:3::1")
        );
    }

    #[test]
    fn a_session_takes_one_request_at_a_time_and_is_free_again_after_it() {
        let uploads = Uploads::new(&RegistryConfig::default());
        let id = UploadId::parse(&"a".repeat(32)).unwrap();
        let first = uploads.turn(&id).unwrap();
        let second = uploads.turn(&id).map(|_| ()).unwrap_err();
        assert_eq!(second.code, Code::TooManyRequests);
        assert!(
            uploads
                .turn(&UploadId::parse(&"b".repeat(32)).unwrap())
                .is_ok(),
            "other sessions are free"
        );
        drop(first);
        assert!(uploads.turn(&id).is_ok());
        assert!(
            uploads.busy.lock().unwrap().is_empty(),
            "an idle session leaves nothing in memory"
        );
    }
}
