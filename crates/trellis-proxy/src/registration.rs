//! Keeps the sidecar's instance registered and its TTL check in step with the app's health:
//! anti-entropy, as a Consul agent does. Whenever the registry says the instance or its check
//! is missing (a restart that lost data, an operator's deregistration, the reaper) the sidecar
//! registers it again; while the registry is unreachable it keeps probing the app and retries
//! with jittered back-off.
//!
//! The decisions are made by [`Keeper`], a pure state machine fed with the registry's answers;
//! [`keep_registered`] does the IO and the logging.

use crate::Error;
use crate::server::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use trellis_client::{Client, probe};
use trellis_resilience::{Backoff, Jitter};
use trellis_types::{CheckStatus, ServiceRegistration};

/// The registry call the keeper wants made next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Register the instance with its check.
    Register,
    /// Report the app's status to the TTL check.
    Report,
}

/// A registry answer, as far as the registration is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// 404 to a report: the instance or its check is gone from the registry.
    Missing,
    /// No answer at all (connection refused, timed out).
    Unreachable,
    /// An error status (overloaded, or the registration was refused).
    Refused,
}

impl Answer {
    /// Classifies the result of `call`.
    pub fn of(call: Call, result: &Result<(), trellis_client::Error>) -> Self {
        match result {
            Ok(()) => Self::Ok,
            Err(trellis_client::Error::Status { status: 404, .. }) if call == Call::Report => {
                Self::Missing
            }
            Err(trellis_client::Error::Transport { .. }) => Self::Unreachable,
            Err(_) => Self::Refused,
        }
    }
}

/// Why the instance is not registered (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The sidecar just started.
    Startup,
    /// The registry answered that the instance or its check does not exist.
    Missing,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Missing => "instance or check missing from the registry",
        }
    }
}

/// Where the instance stands with the registry, as far as the sidecar knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unregistered(Reason),
    Registered,
}

/// When to make the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// At once, with the app status just probed (register → report, report 404 → register).
    Now,
    /// At the next check interval, after probing the app again.
    Interval,
    /// After the back-off for this many consecutive failures (probing the app meanwhile).
    Backoff(u32),
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub wait: Wait,
    /// A failure of a new kind: log it at warn. Repeats of the same failure are logged at
    /// debug, so an outage is one warning, not one per retry.
    pub warn: bool,
    /// The registry accepted a call after failing: log that it is back.
    pub recovered: bool,
}

/// The registration state machine: no IO, no clock.
#[derive(Debug, Clone)]
pub struct Keeper {
    state: State,
    /// Failed calls in a row (no answer, or an error status); paces retries.
    failures: u32,
    /// Times in a row the registration vanished without a report being accepted in between.
    vanished: u32,
    /// The failure being experienced, if any.
    trouble: Option<Answer>,
}

impl Default for Keeper {
    fn default() -> Self {
        Self {
            state: State::Unregistered(Reason::Startup),
            failures: 0,
            vanished: 0,
            trouble: None,
        }
    }
}

impl Keeper {
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the registry accepted the registration, until it says it is gone. (While the
    /// registry is unreachable the last known answer stands.)
    pub fn registered(&self) -> bool {
        self.state == State::Registered
    }

    pub fn next_call(&self) -> Call {
        match self.state {
            State::Unregistered(_) => Call::Register,
            State::Registered => Call::Report,
        }
    }

    /// Takes the answer to `call` and says what to do next.
    pub fn on_answer(&mut self, call: Call, answer: Answer) -> Decision {
        let answered = matches!(answer, Answer::Ok | Answer::Missing);
        let recovered = answered && self.trouble.take().is_some();
        match (call, answer) {
            (Call::Register, Answer::Ok) => {
                self.state = State::Registered;
                self.failures = 0;
                Decision {
                    wait: Wait::Now,
                    warn: false,
                    recovered,
                }
            }
            (Call::Report, Answer::Ok) => {
                self.failures = 0;
                self.vanished = 0;
                Decision {
                    wait: Wait::Interval,
                    warn: false,
                    recovered,
                }
            }
            (_, Answer::Missing) => {
                self.state = State::Unregistered(Reason::Missing);
                self.failures = 0;
                self.vanished += 1;
                // The first time, register again at once; if the registration keeps vanishing
                // (someone deregistering it in a loop), back off instead of spinning.
                let wait = if self.vanished == 1 {
                    Wait::Now
                } else {
                    Wait::Backoff(self.vanished)
                };
                Decision {
                    wait,
                    warn: true,
                    recovered,
                }
            }
            (_, Answer::Unreachable | Answer::Refused) => {
                let warn = self.trouble != Some(answer);
                self.trouble = Some(answer);
                self.failures += 1;
                Decision {
                    wait: Wait::Backoff(self.failures),
                    warn,
                    recovered: false,
                }
            }
        }
    }
}

/// How the app's health is probed.
pub enum AppCheck {
    Http {
        http: reqwest::Client,
        url: String,
        /// `HTTP GET <url>`, the start of every output.
        label: String,
    },
    Tcp {
        addr: String,
    },
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl AppCheck {
    /// An HTTP check of `path` on `app` (`HOST:PORT`), or a TCP connect without a path.
    pub fn new(app: &str, path: Option<&str>) -> crate::Result<Self> {
        Ok(match path {
            Some(path) => Self::Http {
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(PROBE_TIMEOUT)
                    .build()
                    .map_err(|e| Error::config(format!("http client: {e}")))?,
                url: format!("http://{app}{path}"),
                label: format!("HTTP GET http://{app}{path}"),
            },
            None => Self::Tcp {
                addr: app.to_owned(),
            },
        })
    }

    /// The app's status and a line saying why.
    pub async fn probe(&self) -> (CheckStatus, String) {
        match self {
            Self::Http { http, url, label } => probe::http(http.get(url), label).await,
            Self::Tcp { addr } => probe::tcp(addr, PROBE_TIMEOUT).await,
        }
    }
}

/// Everything the registration loop needs.
pub struct Registration {
    pub client: Client,
    pub registration: ServiceRegistration,
    pub check: AppCheck,
    pub interval: Duration,
    pub ttl: Duration,
    /// Set while the instance is registered and the app not critical (the admin `/ready`).
    pub ready: Arc<AtomicBool>,
}

/// The pause before retry number `attempt`: jittered (so sidecars do not all return at once),
/// at most 2 s so an instance is back within about that long of its registry, and at most half
/// the TTL so a registered instance's check does not expire over a brief registry hiccup.
fn retry_delay(ttl: Duration, attempt: u32) -> Duration {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(2)),
        jitter: Jitter::Equal,
    };
    backoff.delay(attempt.min(16), &mut rand::rng())
}

/// Registers the instance and keeps it registered, reporting the app's health to its TTL
/// check every interval, until `stop` is triggered. Registry calls in flight are finished,
/// never cut, so a registration cannot land after the deregistration that follows a stop.
pub async fn keep_registered(this: Registration, mut stop: Shutdown) {
    let Registration {
        client,
        registration,
        check,
        interval,
        ttl,
        ready,
    } = this;
    let mut sync = RegistrySync {
        check_id: format!("service:{}", registration.id),
        client,
        registration,
        keeper: Keeper::default(),
        outage_since: None,
    };
    let mut health: Option<CheckStatus> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (status, output) = tokio::select! {
            biased;
            () = stop.wait() => return,
            probed = check.probe() => probed,
        };
        log_health(&sync.registration.id, health, status, &output);
        health = Some(status);
        let wait = sync.run(status, &output).await;
        ready.store(
            sync.keeper.registered() && status != CheckStatus::Critical,
            Ordering::Relaxed,
        );
        let pause = async {
            match wait {
                Wait::Now | Wait::Interval => {
                    ticker.tick().await;
                }
                Wait::Backoff(attempt) => tokio::time::sleep(retry_delay(ttl, attempt)).await,
            }
        };
        tokio::select! {
            biased;
            () = stop.wait() => return,
            () = pause => {}
        }
    }
}

/// The registry side of the loop: makes the calls the [`Keeper`] asks for and logs them.
struct RegistrySync {
    client: Client,
    registration: ServiceRegistration,
    check_id: String,
    keeper: Keeper,
    /// When the registry stopped answering, for the "back" line.
    outage_since: Option<Instant>,
}

impl RegistrySync {
    /// Brings the registry up to date with the app's `status`: registers if needed, reports.
    /// Returns how long to wait before the next round.
    async fn run(&mut self, status: CheckStatus, output: &str) -> Wait {
        loop {
            let call = self.keeper.next_call();
            let result = match call {
                Call::Register => {
                    // Registered with the app's current status, so a healthy instance is
                    // routable at once instead of critical until the first report.
                    for definition in &mut self.registration.checks {
                        definition.status = Some(status);
                    }
                    self.client.register(&self.registration).await
                }
                Call::Report => {
                    self.client
                        .update_check(&self.check_id, status, output)
                        .await
                }
            };
            let answer = Answer::of(call, &result);
            let before = self.keeper.state();
            let decision = self.keeper.on_answer(call, answer);
            self.log(call, before, &result, answer, decision, status);
            if decision.wait != Wait::Now {
                return decision.wait;
            }
        }
    }

    fn log(
        &mut self,
        call: Call,
        before: State,
        result: &Result<(), trellis_client::Error>,
        answer: Answer,
        decision: Decision,
        status: CheckStatus,
    ) {
        let id = &self.registration.id;
        if decision.recovered {
            let down_ms = self
                .outage_since
                .take()
                .map_or(0, |since| since.elapsed().as_millis() as u64);
            tracing::info!(%id, down_ms, "registry is back");
        }
        match (result, answer) {
            (Ok(()), _) if call == Call::Register => {
                let reason = match before {
                    State::Unregistered(reason) => reason.as_str(),
                    State::Registered => "refresh",
                };
                tracing::info!(%id, address = %self.registration.address,
                    port = self.registration.port, %status, %reason, "registered");
            }
            (_, Answer::Missing) => {
                tracing::warn!(%id, "registration missing from the registry (restart \
                    without its data, deregistered by hand, or reaped); registering again");
            }
            (Err(e), _) => {
                self.outage_since.get_or_insert_with(Instant::now);
                let what = match call {
                    Call::Register => "cannot register",
                    Call::Report => "cannot report health",
                };
                let why = match answer {
                    Answer::Unreachable => "registry unreachable",
                    _ => "registry refused",
                };
                if decision.warn {
                    tracing::warn!(%id, error = %e,
                        "{what}: {why}; retrying with back-off, still probing the app");
                } else {
                    tracing::debug!(%id, error = %e, "{what}; retrying");
                }
            }
            (Ok(()), _) => {}
        }
    }
}

/// Logs the app's health when it changes: critical at warn, with the probe's output.
fn log_health(id: &str, before: Option<CheckStatus>, now: CheckStatus, output: &str) {
    if before == Some(now) {
        return;
    }
    let from = before.map_or("unknown", CheckStatus::as_str);
    if now == CheckStatus::Critical {
        tracing::warn!(%id, %from, to = %now, %output, "app health changed");
    } else {
        tracing::info!(%id, %from, to = %now, %output, "app health changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(keeper: &mut Keeper, answer: Answer) -> Decision {
        let call = keeper.next_call();
        keeper.on_answer(call, answer)
    }

    #[test]
    fn registers_first_then_reports_every_interval() {
        let mut k = Keeper::default();
        assert_eq!(k.state(), State::Unregistered(Reason::Startup));
        assert_eq!(k.next_call(), Call::Register);
        assert!(!k.registered());
        let d = answer(&mut k, Answer::Ok);
        assert_eq!(d.wait, Wait::Now, "report at once after registering");
        assert!(k.registered());
        assert_eq!(k.next_call(), Call::Report);
        let d = answer(&mut k, Answer::Ok);
        assert_eq!(
            d,
            Decision {
                wait: Wait::Interval,
                warn: false,
                recovered: false
            }
        );
    }

    #[test]
    fn a_missing_registration_is_registered_again_at_once() {
        let mut k = Keeper::default();
        answer(&mut k, Answer::Ok);
        answer(&mut k, Answer::Ok);
        let d = answer(&mut k, Answer::Missing);
        assert_eq!(d.wait, Wait::Now);
        assert!(d.warn);
        assert_eq!(k.state(), State::Unregistered(Reason::Missing));
        assert!(!k.registered(), "not ready while unregistered");
        assert_eq!(k.next_call(), Call::Register);
        answer(&mut k, Answer::Ok);
        assert_eq!(answer(&mut k, Answer::Ok).wait, Wait::Interval);
        // Healthy again: a later disappearance is again re-registered at once.
        assert_eq!(answer(&mut k, Answer::Missing).wait, Wait::Now);
    }

    #[test]
    fn a_registration_that_keeps_vanishing_backs_off() {
        let mut k = Keeper::default();
        answer(&mut k, Answer::Ok);
        assert_eq!(answer(&mut k, Answer::Missing).wait, Wait::Now);
        assert_eq!(answer(&mut k, Answer::Ok).wait, Wait::Now);
        assert_eq!(answer(&mut k, Answer::Missing).wait, Wait::Backoff(2));
        answer(&mut k, Answer::Ok);
        assert_eq!(answer(&mut k, Answer::Missing).wait, Wait::Backoff(3));
    }

    #[test]
    fn an_outage_warns_once_and_reports_recovery() {
        let mut k = Keeper::default();
        answer(&mut k, Answer::Ok);
        answer(&mut k, Answer::Ok);
        let first = answer(&mut k, Answer::Unreachable);
        assert_eq!(first.wait, Wait::Backoff(1));
        assert!(first.warn);
        for attempt in 2..10 {
            let d = answer(&mut k, Answer::Unreachable);
            assert_eq!(d.wait, Wait::Backoff(attempt), "growing back-off");
            assert!(!d.warn, "one warning per outage");
            assert!(k.registered(), "the last known answer stands");
        }
        // A different failure is worth its own warning.
        assert!(answer(&mut k, Answer::Refused).warn);
        let back = answer(&mut k, Answer::Ok);
        assert!(back.recovered);
        assert_eq!(back.wait, Wait::Interval);
        assert!(!answer(&mut k, Answer::Ok).recovered, "once");
        // The next outage warns again.
        assert!(answer(&mut k, Answer::Unreachable).warn);
    }

    #[test]
    fn a_registry_that_comes_back_empty_gets_the_registration_again() {
        let mut k = Keeper::default();
        answer(&mut k, Answer::Ok);
        answer(&mut k, Answer::Ok);
        answer(&mut k, Answer::Unreachable);
        answer(&mut k, Answer::Unreachable);
        let d = answer(&mut k, Answer::Missing);
        assert!(d.recovered && d.warn);
        assert_eq!(
            d.wait,
            Wait::Now,
            "registered again as soon as the registry is back"
        );
        assert_eq!(k.next_call(), Call::Register);
        assert_eq!(answer(&mut k, Answer::Ok).wait, Wait::Now);
        assert_eq!(answer(&mut k, Answer::Ok).wait, Wait::Interval);
    }

    #[test]
    fn registering_while_the_registry_is_down_retries_with_back_off() {
        let mut k = Keeper::default();
        assert_eq!(answer(&mut k, Answer::Unreachable).wait, Wait::Backoff(1));
        assert_eq!(k.next_call(), Call::Register);
        assert_eq!(answer(&mut k, Answer::Refused).wait, Wait::Backoff(2));
        let d = answer(&mut k, Answer::Ok);
        assert!(d.recovered, "the trouble is over");
        assert_eq!(d.wait, Wait::Now);
        assert!(k.registered());
    }

    #[test]
    fn answers_are_classified() {
        let status = |status| {
            Err(trellis_client::Error::Status {
                method: "PUT",
                path: "/".into(),
                status,
                body: String::new(),
            })
        };
        assert_eq!(Answer::of(Call::Report, &Ok(())), Answer::Ok);
        assert_eq!(Answer::of(Call::Report, &status(404)), Answer::Missing);
        assert_eq!(Answer::of(Call::Register, &status(404)), Answer::Refused);
        assert_eq!(Answer::of(Call::Report, &status(503)), Answer::Refused);
        let garbled = Err(trellis_client::Error::Decode {
            path: "/".into(),
            reason: "x".into(),
        });
        assert_eq!(Answer::of(Call::Report, &garbled), Answer::Refused);
    }

    #[tokio::test]
    async fn no_connection_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("127.0.0.1:{port}")).unwrap();
        let result = client.update_check("c", CheckStatus::Passing, "").await;
        assert_eq!(Answer::of(Call::Report, &result), Answer::Unreachable);
    }

    #[test]
    fn retry_delays_stay_under_half_the_ttl() {
        for attempt in 1..40 {
            assert!(retry_delay(Duration::from_secs(3), attempt) <= Duration::from_millis(1500));
            assert!(retry_delay(Duration::from_secs(60), attempt) <= Duration::from_secs(2));
        }
    }
}
