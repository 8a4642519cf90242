//! TTL checks expire at their TTL, not at the writer's next fixed tick (issue 16): on the real
//! binary, a check with a 300 ms TTL passed once is still passing until 300 ms after the pass
//! was sent (strictly) and critical soon after (within a generous 150 ms), observed by polling
//! every 10 ms. The exact deadline arithmetic is tested in the catalog with an injected clock.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, http};

const TTL: Duration = Duration::from_millis(300);
/// How late the expiry may be observed: the writer's wake-up, the poll interval and two HTTP
/// round trips on a loaded machine.
const LATE: Duration = Duration::from_millis(150);
const POLL: Duration = Duration::from_millis(10);

/// One poll: when it was sent, when its answer came, and the check's status.
struct Poll {
    sent: Instant,
    answered: Instant,
    status: String,
}

async fn status(c: &reqwest::Client, s: &Server) -> String {
    let r = c.get(s.url("/v1/health/checks/ttl")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let checks: Value = r.json().await.unwrap();
    checks[0]["Status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_ttl_check_expires_at_its_ttl() {
    let s = Server::dev();
    let c = http();
    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&json!({"Name": "ttl", "ID": "ttl-1", "Check": {"TTL": "300ms"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        status(&c, &s).await,
        "critical",
        "a new check starts critical"
    );
    // Three rounds that can tell (a poll answered between 200 ms and the TTL); a round a
    // loaded machine polled too slowly for that is run again, up to ten rounds in all.
    let mut told = 0;
    for round in 0..10 {
        if told == 3 {
            break;
        }
        let pass_sent = Instant::now();
        let r = c
            .put(s.url("/v1/agent/check/pass/service:ttl-1"))
            .send()
            .await
            .unwrap();
        let pass_answered = Instant::now();
        assert_eq!(r.status(), 200);
        let mut polls = Vec::new();
        loop {
            let sent = Instant::now();
            let status = status(&c, &s).await;
            let answered = Instant::now();
            let critical = status == "critical";
            polls.push(Poll {
                sent,
                answered,
                status,
            });
            if critical || sent > pass_answered + Duration::from_secs(3) {
                break;
            }
            tokio::time::sleep_until((sent + POLL).into()).await;
        }
        // The TTL restarted when the writer applied the pass, after it was sent: no answer that
        // came before then may say critical.
        for poll in polls.iter().filter(|p| p.answered < pass_sent + TTL) {
            assert_eq!(
                poll.status,
                "passing",
                "round {round}: critical {:?} after the pass was sent, before its TTL",
                poll.answered - pass_sent
            );
        }
        let can_tell = polls.iter().any(|p| {
            p.sent >= pass_answered + Duration::from_millis(200) && p.answered < pass_sent + TTL
        });
        if can_tell {
            told += 1;
        } else {
            eprintln!("round {round}: no poll between 200 ms and the TTL (too slow to tell)");
        }
        let first_critical = polls.last().unwrap();
        assert_eq!(
            first_critical.status, "critical",
            "round {round}: still passing 3 s after a 300 ms TTL"
        );
        let last_passing = polls.iter().rev().find(|p| p.status == "passing").unwrap();
        assert!(
            last_passing.sent < pass_answered + TTL + LATE,
            "round {round}: still passing {:?} after the pass was answered",
            last_passing.sent - pass_answered
        );
        // The expiry happened between the last passing poll's sending and the first critical
        // poll's answer; the deadline between the pass's sending and its answer, plus the TTL.
        let earliest = last_passing
            .sent
            .saturating_duration_since(pass_answered + TTL);
        let latest = first_critical
            .answered
            .saturating_duration_since(pass_sent + TTL);
        eprintln!("round {round}: expired {earliest:?}..{latest:?} after its TTL");
    }
    assert_eq!(
        told, 3,
        "fewer than 3 of 10 rounds had a poll between 200 ms and the TTL (machine too slow to tell)"
    );
}
