//! Reading the audit trail of a test mirror: what a real client's requests left
//! in the index, by who made them. The server writes audit rows in batches, a
//! few milliseconds behind the requests, so readers wait with a deadline.

use std::time::Duration;

use mirror::store::{AuditQuery, AuditRecord};

use crate::common::{TestMirror, wait_for};

/// Every audit row whose artifact contains `artifact`, newest first.
pub async fn rows(mirror: &TestMirror, artifact: &str) -> Vec<AuditRecord> {
    let query = AuditQuery {
        artifact: Some(artifact.to_owned()),
        limit: 1000,
        ..AuditQuery::default()
    };
    mirror
        .mirror()
        .store()
        .audit()
        .query(&query)
        .await
        .expect("audit query")
}

/// Who made a request, as the audit records it.
#[derive(Clone, Copy, Debug)]
pub enum Who<'a> {
    Cert(&'a str),
    User(&'a str),
    Anonymous,
}

impl Who<'_> {
    fn matches(&self, row: &AuditRecord) -> bool {
        match self {
            Who::Cert(cn) => row.identity == "cert" && row.subject == *cn,
            Who::User(user) => row.identity == "user" && row.subject == *user,
            Who::Anonymous => row.identity == "anonymous",
        }
    }
}

/// Waits until a read of something matching `artifact` by `who` is in the
/// audit, and returns those rows.
pub async fn wait_for_read(mirror: &TestMirror, artifact: &str, who: Who<'_>) -> Vec<AuditRecord> {
    let matching = |rows: Vec<AuditRecord>| -> Vec<AuditRecord> {
        rows.into_iter()
            .filter(|r| who.matches(r) && r.action == "read")
            .collect()
    };
    let mut found = Vec::new();
    wait_for(
        &format!("an audited read of {artifact} by {who:?}"),
        Duration::from_secs(10),
        || {
            let rows = rows(mirror, artifact);
            async { !matching(rows.await).is_empty() }
        },
    )
    .await;
    found.extend(matching(rows(mirror, artifact).await));
    found
}
