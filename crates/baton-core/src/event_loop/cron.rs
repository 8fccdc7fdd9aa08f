//! Scheduled reloads (the `cronRestart` group option).
//!
//! Each group with a `cronRestart` expression has a timer: its next fire time on the wall
//! clock, in the master's local time zone (`chrono::Local`, which honours `TZ`). The loop
//! turns the nearest one into a deadline of its poll timeout, recomputed from the wall
//! clock on every turn, so a clock that is set (NTP, DST) moves the deadline with it. When
//! one is due, the loop logs `scheduled reload (cronRestart EXPR) ...` and requests a
//! reload exactly as `baton reload` does ([`Input::Reload`](crate::fleet::Input::Reload)
//! with a fresh ticket): sequential, gated on readiness, aborted by a bad replacement, and
//! coalesced with a running pass. The reload replaces every reloadable group (a reload has
//! no per-group form).
//!
//! [`CronTimers`] reads no clock: the wall time and the monotonic time come in as
//! arguments, so the rules are tested with fixed times below.

use std::time::{Duration, Instant};

use baton_contract::cron::{self, Schedule};
use chrono::{DateTime, TimeZone};

use crate::config::FleetConfig;

/// One group's schedule and its next fire time.
struct Timer<Tz: TimeZone> {
    group: String,
    schedule: Schedule,
    next: Option<DateTime<Tz>>,
}

/// A fire that is due: which group's expression asked for the reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fire {
    /// The group whose `cronRestart` fired.
    pub group: String,
    /// The expression, as written.
    pub expression: String,
}

/// The `cronRestart` timers of a fleet.
pub(super) struct CronTimers<Tz: TimeZone> {
    timers: Vec<Timer<Tz>>,
}

impl<Tz: TimeZone> CronTimers<Tz> {
    /// The timers of every group with a `cronRestart` (validated at start, so parsing does
    /// not fail here; an expression that does is reported and left out).
    pub(super) fn new(schedules: &[(String, Option<String>)]) -> (Self, Vec<String>) {
        let mut timers = Vec::new();
        let mut problems = Vec::new();
        for (group, expression) in schedules {
            let Some(expression) = expression.as_deref() else {
                continue;
            };
            match cron::parse(expression) {
                Ok(schedule) => timers.push(Timer {
                    group: group.clone(),
                    schedule,
                    next: None,
                }),
                Err(why) => problems.push(format!(
                    "groups.{group}.cronRestart: \"{expression}\" is not a cron expression: {why}; no scheduled reloads for this group"
                )),
            }
        }
        (CronTimers { timers }, problems)
    }

    /// Whether no group has a schedule.
    pub(super) fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// When the nearest fire is due on the monotonic clock, given the wall clock `wall` and
    /// the monotonic `now` read together. Timers not yet armed are armed from `wall`.
    pub(super) fn next_at(&mut self, wall: &DateTime<Tz>, now: Instant) -> Option<Instant> {
        let mut nearest: Option<Instant> = None;
        for timer in &mut self.timers {
            if timer.next.is_none() {
                timer.next = timer.schedule.next_after(wall);
            }
            let Some(next) = &timer.next else { continue };
            let wait = next
                .clone()
                .signed_duration_since(wall.clone())
                .to_std()
                .unwrap_or(Duration::ZERO);
            let at = now + wait;
            nearest = Some(nearest.map_or(at, |n| n.min(at)));
        }
        nearest
    }

    /// The fires due at `wall` (each timer at most once, however late: missed fire times
    /// are not caught up), each timer re-armed for its first fire time after `wall`.
    pub(super) fn due(&mut self, wall: &DateTime<Tz>) -> Vec<Fire> {
        let mut fires = Vec::new();
        for timer in &mut self.timers {
            let Some(next) = timer.next.clone() else {
                continue;
            };
            if next > *wall {
                continue;
            }
            fires.push(Fire {
                group: timer.group.clone(),
                expression: timer.schedule.expression().to_string(),
            });
            timer.next = timer.schedule.next_after(wall);
        }
        fires
    }

    /// Take the schedules of a re-read configuration: groups whose expression changed (or
    /// that gained or lost one) are re-armed at the next [`CronTimers::next_at`].
    pub(super) fn reconfigure(&mut self, schedules: &[(String, Option<String>)]) -> Vec<String> {
        let (mut fresh, problems) = CronTimers::new(schedules);
        for timer in &mut fresh.timers {
            if let Some(old) = self.timers.iter_mut().find(|t| {
                t.group == timer.group && t.schedule.expression() == timer.schedule.expression()
            }) {
                timer.next = old.next.take();
            }
        }
        *self = fresh;
        problems
    }
}

/// Each group's name and `cronRestart`, as [`CronTimers::new`] takes them.
pub(super) fn schedules(config: &FleetConfig) -> Vec<(String, Option<String>)> {
    config
        .groups
        .iter()
        .map(|g| (g.rules.name.clone(), g.options.cron_restart.clone()))
        .collect()
}

/// The wall clock in the master's local time zone (`TZ` honoured).
pub(super) fn local_now() -> DateTime<chrono::Local> {
    chrono::Local::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    fn config(schedules: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        schedules
            .iter()
            .map(|(name, expr)| (name.to_string(), expr.map(str::to_string)))
            .collect()
    }

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn the_deadline_is_the_nearest_fire_time() {
        let (mut timers, problems) =
            CronTimers::new(&config(&[("web", Some("*/4 * * * * *")), ("jobs", None)]));
        assert!(problems.is_empty());
        let now = Instant::now();
        let wall = at("2026-12-07T07:00:01.500+01:00");
        assert_eq!(
            timers.next_at(&wall, now),
            Some(now + Duration::from_millis(2500))
        );
        assert!(timers.due(&wall).is_empty());
        let fires = timers.due(&at("2026-12-07T07:00:04+01:00"));
        assert_eq!(
            fires,
            vec![Fire {
                group: "web".into(),
                expression: "*/4 * * * * *".into()
            }]
        );
        // Re-armed for the next one, strictly after.
        let wall = at("2026-12-07T07:00:04+01:00");
        assert_eq!(
            timers.next_at(&wall, now),
            Some(now + Duration::from_secs(4))
        );
    }

    #[test]
    fn a_late_turn_fires_once_and_skips_missed_times() {
        let (mut timers, _) = CronTimers::new(&config(&[("web", Some("*/4 * * * * *"))]));
        let now = Instant::now();
        timers.next_at(&at("2026-12-07T07:00:01Z"), now);
        // 10 s late: the fires at :04 and :08 are one reload, the next is :12.
        assert_eq!(timers.due(&at("2026-12-07T07:00:11Z")).len(), 1);
        assert!(timers.due(&at("2026-12-07T07:00:11.9Z")).is_empty());
        assert_eq!(
            timers.next_at(&at("2026-12-07T07:00:11Z"), now),
            Some(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn local_time_is_the_time_zone_of_the_wall_clock() {
        // 03:00 local: in UTC+02:00 it is due at 01:00 UTC, in UTC at 03:00.
        let (mut plus2, _) = CronTimers::<FixedOffset>::new(&config(&[("web", Some("0 3 * * *"))]));
        let (mut utc, _) = CronTimers::<Utc>::new(&config(&[("web", Some("0 3 * * *"))]));
        let now = Instant::now();
        let wall = at("2026-12-07T00:00:00Z");
        let zone = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            plus2.next_at(&wall.with_timezone(&zone), now),
            Some(now + Duration::from_secs(3600))
        );
        assert_eq!(
            utc.next_at(&wall.with_timezone(&Utc), now),
            Some(now + Duration::from_secs(3 * 3600))
        );
    }

    #[test]
    fn a_clock_set_forward_fires_at_once() {
        let (mut timers, _) = CronTimers::new(&config(&[("web", Some("0 * * * *"))]));
        let now = Instant::now();
        timers.next_at(&at("2026-12-07T07:10:00Z"), now);
        // The wall clock jumps past 08:00 without the monotonic clock moving.
        assert_eq!(timers.next_at(&at("2026-12-07T08:00:30Z"), now), Some(now));
        assert_eq!(timers.due(&at("2026-12-07T08:00:30Z")).len(), 1);
    }

    #[test]
    fn reconfigure_keeps_unchanged_timers_and_arms_new_ones() {
        let (mut timers, _) = CronTimers::new(&config(&[("web", Some("0 * * * *"))]));
        let now = Instant::now();
        timers.next_at(&at("2026-12-07T07:10:00Z"), now);
        timers.reconfigure(&config(&[("web", Some("0 * * * *"))]));
        assert_eq!(timers.due(&at("2026-12-07T08:00:00Z")).len(), 1);
        timers.reconfigure(&config(&[("web", None)]));
        assert!(timers.is_empty());
    }
}
