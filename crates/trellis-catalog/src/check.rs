//! One health check's state: status, hysteresis counters, TTL deadline and critical-since time.

use crate::record::CheckRecord;
use std::time::Duration;
use trellis_types::{CheckDefinition, CheckKind, CheckStatus};

/// Probe timeout used when a check does not set one, as Consul does.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a script check that sets none (Consul's `CheckMonitor` default).
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Normalised definition: `id` and `name` always set (an unset `timeout` defaults in
    /// [`Check::timeout`]).
    pub definition: CheckDefinition,
    pub service_name: Option<String>,
    pub status: CheckStatus,
    pub output: String,
    pub create_index: u64,
    pub modify_index: u64,
    consecutive_successes: u32,
    consecutive_failures: u32,
    ttl_deadline: Option<Duration>,
    critical_since: Option<Duration>,
}

impl Check {
    pub(crate) fn new(
        definition: CheckDefinition,
        service_name: Option<String>,
        index: u64,
        now: Duration,
    ) -> Self {
        let status = definition.status.unwrap_or(CheckStatus::Critical);
        let mut check = Self {
            definition,
            service_name,
            status,
            output: String::new(),
            create_index: index,
            modify_index: index,
            consecutive_successes: 0,
            consecutive_failures: 0,
            ttl_deadline: None,
            critical_since: None,
        };
        check.reset_timers(now);
        check
    }

    pub(crate) fn restore(
        record: CheckRecord,
        service_name: Option<String>,
        now: Duration,
    ) -> Self {
        let mut check = Self::new(record.definition, service_name, record.create_index, now);
        check.status = record.status;
        check.output = record.output;
        check.modify_index = record.modify_index;
        check.reset_timers(now);
        check
    }

    pub fn record(&self) -> CheckRecord {
        CheckRecord {
            definition: self.definition.clone(),
            status: self.status,
            output: self.output.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
        }
    }

    pub fn id(&self) -> &str {
        self.definition.id.as_deref().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.definition.name.as_deref().unwrap_or_default()
    }

    pub fn service_id(&self) -> Option<&str> {
        self.definition.service_id.as_deref()
    }

    pub fn timeout(&self) -> Duration {
        let default = if self.definition.kind.is_script() {
            DEFAULT_SCRIPT_TIMEOUT
        } else {
            DEFAULT_CHECK_TIMEOUT
        };
        self.definition.timeout.unwrap_or(default)
    }

    /// Checks the server probes itself (HTTP, TCP, gRPC, script), as opposed to TTL checks and
    /// static ones (maintenance, catalog-registered) that nobody probes.
    pub fn is_active(&self) -> bool {
        self.definition.kind.is_probed()
    }

    /// Keeps `previous`'s status and output (a new definition of the same kind that sets no
    /// status). The critical-since time follows the status kept: from `now` if critical, none
    /// otherwise (not the one [`Check::new`] derived from the definition's default status, which
    /// would start the reaper's clock early once the check goes critical).
    pub(crate) fn keep_status_of(&mut self, previous: &Check, now: Duration) {
        self.status = previous.status;
        self.output = previous.output.clone();
        self.critical_since = (self.status == CheckStatus::Critical).then_some(now);
    }

    /// Starts the TTL and the critical-since time again at `now`, as a fresh check's.
    pub(crate) fn reset_timers(&mut self, now: Duration) {
        self.ttl_deadline = match self.definition.kind {
            CheckKind::Ttl { ttl } => Some(now + ttl),
            _ => None,
        };
        self.critical_since = (self.status == CheckStatus::Critical).then_some(now);
    }

    /// Sets status and output; returns whether anything visible changed.
    fn set(&mut self, status: CheckStatus, output: String, now: Duration) -> bool {
        if status == CheckStatus::Critical {
            self.critical_since.get_or_insert(now);
        } else {
            self.critical_since = None;
        }
        let changed = status != self.status || output != self.output;
        self.status = status;
        self.output = output;
        changed
    }

    /// A TTL update from the application: applied directly, and the TTL restarts.
    pub(crate) fn update_ttl(
        &mut self,
        status: CheckStatus,
        output: String,
        now: Duration,
    ) -> bool {
        if let CheckKind::Ttl { ttl } = self.definition.kind {
            self.ttl_deadline = Some(now + ttl);
        }
        self.set(status, output, now)
    }

    /// A probe result of an active check, through the hysteresis thresholds: the status only
    /// moves to passing after `SuccessBeforePassing` successes in a row, and to critical after
    /// `FailuresBeforeCritical` failures in a row (warning after `FailuresBeforeWarning`).
    pub(crate) fn report(&mut self, result: CheckStatus, output: String, now: Duration) -> bool {
        let d = &self.definition;
        let status = if result == CheckStatus::Passing {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if self.consecutive_successes >= d.success_before_passing.max(1) {
                CheckStatus::Passing
            } else {
                self.status
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            let to_critical = d.failures_before_critical.max(1);
            let to_warning = if d.failures_before_warning == 0 {
                to_critical
            } else {
                d.failures_before_warning.min(to_critical)
            };
            if self.consecutive_failures >= to_critical {
                result
            } else if self.consecutive_failures >= to_warning {
                CheckStatus::Warning
            } else {
                self.status
            }
        };
        // Output follows every probe, as in Consul, but only a status change is "visible"
        // enough to bump indexes: otherwise each probe would wake every watcher.
        let status_changed = status != self.status;
        self.set(status, output, now);
        status_changed
    }

    /// Whether a TTL check has run out and is not critical yet.
    pub(crate) fn ttl_due(&self, now: Duration) -> bool {
        self.status != CheckStatus::Critical && self.ttl_deadline.is_some_and(|d| now >= d)
    }

    /// Marks an expired TTL check critical; returns whether it changed.
    pub(crate) fn expire_ttl(&mut self, now: Duration) -> bool {
        match self.ttl_deadline {
            Some(deadline) if now >= deadline && self.status != CheckStatus::Critical => {
                self.force_expire(now)
            }
            _ => false,
        }
    }

    /// Marks a TTL check critical because the server owning its expiry saw the TTL run out
    /// (its own deadline, kept elsewhere); returns whether it changed.
    pub(crate) fn force_expire(&mut self, now: Duration) -> bool {
        self.ttl_deadline = None;
        self.set(CheckStatus::Critical, "TTL expired".into(), now)
    }

    /// When something next happens to this check by itself: a TTL check that is not critical
    /// expires at its TTL deadline; a critical service check with `DeregisterCriticalServiceAfter`
    /// is reaped that long after it went critical. `None` when nothing is pending.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        if self.status != CheckStatus::Critical {
            return self.ttl_deadline;
        }
        match (
            self.definition.deregister_critical_service_after,
            self.critical_since,
            self.service_id(),
        ) {
            (Some(after), Some(since), Some(_)) => Some(since + after),
            _ => None,
        }
    }

    /// Whether the reaper should remove this check's service now.
    pub(crate) fn should_reap(&self, now: Duration) -> bool {
        match (
            self.definition.deregister_critical_service_after,
            self.critical_since,
        ) {
            (Some(after), Some(since)) => {
                self.status == CheckStatus::Critical && now >= since + after
            }
            _ => false,
        }
    }

    /// Same definition except for the status field (a re-registration that changes nothing).
    pub(crate) fn same_definition(&self, other: &CheckDefinition) -> bool {
        let mut a = self.definition.clone();
        let mut b = other.clone();
        a.status = None;
        b.status = None;
        a == b
    }
}
