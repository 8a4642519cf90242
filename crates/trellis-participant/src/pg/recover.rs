//! Recovery of branches in doubt: prepared transactions of ours that nobody committed or rolled
//! back (the participant crashed, or the coordinator's phase-2 call never came), settled by the
//! coordinator's decision.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::barrier::{self, Marked};
use super::name::{self, Parsed, literal};
use super::pool::Pool;
use crate::Error;
use crate::protocol::Branch;

/// How long one question to the coordinator may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// A path segment: everything but unreserved characters is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One prepared branch found by [`crate::PgParticipant::resolve_in_doubt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    pub gid: String,
    pub branch_id: String,
    /// The prepared transaction's name in `pg_prepared_xacts`.
    pub xact: String,
}

/// What [`crate::PgParticipant::resolve_in_doubt`] did with each prepared branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InDoubtReport {
    /// Committed: the coordinator decided commit.
    pub committed: Vec<InDoubt>,
    /// Rolled back: the coordinator decided abort, or no longer knows the gid.
    pub aborted: Vec<InDoubt>,
    /// Left prepared: the coordinator is still collecting votes and will call.
    pub left: Vec<InDoubt>,
    /// Left prepared because of an error (coordinator unreachable, database error), with the
    /// reason; a later run or the coordinator's own call settles them.
    pub failed: Vec<(InDoubt, String)>,
}

/// The coordinator's decision for a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Commit,
    Abort,
    Wait,
}

pub(crate) async fn resolve(pool: &Pool, coordinator: &str) -> Result<InDoubtReport, Error> {
    let base = coordinator_base(coordinator)?;
    let http = reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .build()
        .map_err(Error::Http)?;
    let mut conn = pool.get().await?;
    let names: Vec<String> = conn
        .query(
            "SELECT gid FROM pg_prepared_xacts \
             WHERE database = current_database() AND gid LIKE 'trellis:%' ORDER BY prepared",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut report = InDoubtReport::default();
    let mut decisions: HashMap<String, Result<Decision, String>> = HashMap::new();
    for xact in names {
        let (gid, branch_id) = match name::parse(&xact) {
            Some(Parsed::Plain { gid, branch_id }) => (gid, branch_id),
            Some(Parsed::Hashed) => match barrier::lookup_name(&conn, &xact).await? {
                Some(found) => found,
                None => {
                    let entry = in_doubt("", "", &xact);
                    report
                        .failed
                        .push((entry, "no trellis_xact_names row for this name".into()));
                    continue;
                }
            },
            // Someone else's transaction that happens to share the prefix.
            None => continue,
        };
        let entry = in_doubt(&gid, &branch_id, &xact);
        let decision = match decisions.get(&gid) {
            Some(decision) => decision.clone(),
            None => {
                let decision = ask(&http, &base, &gid).await;
                decisions.insert(gid.clone(), decision.clone());
                decision
            }
        };
        let settled = match decision {
            Err(reason) => Err(reason),
            Ok(Decision::Wait) => {
                report.left.push(entry);
                continue;
            }
            Ok(Decision::Commit) => commit(&conn, &xact).await.map(|()| Decision::Commit),
            Ok(Decision::Abort) => abort(&mut conn, &entry).await.map(|()| Decision::Abort),
        };
        match settled {
            Ok(Decision::Commit) => {
                tracing::info!(%gid, %branch_id, "2pc recovery: committed a branch in doubt");
                report.committed.push(entry);
            }
            Ok(_) => {
                tracing::info!(%gid, %branch_id, "2pc recovery: rolled back a branch in doubt");
                report.aborted.push(entry);
            }
            Err(reason) => {
                tracing::warn!(%gid, %branch_id, %reason, "2pc recovery: branch left in doubt");
                report.failed.push((entry, reason));
            }
        }
    }
    Ok(report)
}

fn in_doubt(gid: &str, branch_id: &str, xact: &str) -> InDoubt {
    InDoubt {
        gid: gid.into(),
        branch_id: branch_id.into(),
        xact: xact.into(),
    }
}

fn coordinator_base(url: &str) -> Result<String, Error> {
    let base = url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|e| Error::CoordinatorUrl {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::CoordinatorUrl {
            url: url.into(),
            reason: "not an http(s) URL".into(),
        });
    }
    Ok(base.into())
}

async fn ask(http: &reqwest::Client, base: &str, gid: &str) -> Result<Decision, String> {
    #[derive(serde::Deserialize)]
    struct Txn {
        state: String,
    }
    let url = format!(
        "{base}/v1/trellis/txn/{}",
        utf8_percent_encode(gid, SEGMENT)
    );
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("asking the coordinator: {e}"))?;
    match response.status().as_u16() {
        // The coordinator keeps a transaction until every branch acknowledged phase 2, so a
        // gid it does not know was aborted (presumed abort).
        404 => return Ok(Decision::Abort),
        200 => {}
        status => return Err(format!("the coordinator answered {status}")),
    }
    let txn: Txn = response
        .json()
        .await
        .map_err(|e| format!("the coordinator's answer: {e}"))?;
    match txn.state.as_str() {
        "committing" | "committed" => Ok(Decision::Commit),
        "aborting" | "aborted" => Ok(Decision::Abort),
        "preparing" => Ok(Decision::Wait),
        other => Err(format!("unknown transaction state {other:?}")),
    }
}

async fn commit(client: &Client, xact: &str) -> Result<(), String> {
    match client
        .batch_execute(&format!("COMMIT PREPARED {}", literal(xact)))
        .await
    {
        // Gone meanwhile: the coordinator's own commit call got there first.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
        result => result.map_err(|e| format!("COMMIT PREPARED: {e}")),
    }
}

/// Rolls back and writes the abort markers, so that a prepare of this branch still on its way
/// votes no instead of preparing it again.
async fn abort(client: &mut Client, entry: &InDoubt) -> Result<(), String> {
    match client
        .batch_execute(&format!("ROLLBACK PREPARED {}", literal(&entry.xact)))
        .await
    {
        Ok(()) => {}
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {}
        Err(e) => return Err(format!("ROLLBACK PREPARED: {e}")),
    }
    let branch = Branch::new(&*entry.gid, &*entry.branch_id, serde_json::Value::Null);
    match barrier::mark_aborted(client, &branch, true).await {
        Ok(Marked::WasCommitted) => Err("the branch is committed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("writing the abort markers: {e}")),
    }
}
