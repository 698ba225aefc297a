//! Schedule triggers: keeping each scheduled workflow's next tick, and firing due ticks.
//!
//! Every process runs [`Engine::fire_due_schedules`] about once a second; a pass claims due
//! schedule rows (one process per row), fires the ticks its `catch_up` asks for, and moves the
//! row to the next tick. Each tick starts its run through an event whose dedupe key is the
//! workflow and the tick, so a tick fires exactly once however passes crash or race.

use serde_json::json;

use super::Engine;
use crate::Result;
use crate::definition::Trigger;
use crate::schedule::{CatchUp, CronSpec, MAX_CATCH_UP, ON_TIME_MS};

impl Engine {
    /// Brings a workflow's schedule row in line with the workflow: an enabled workflow with a
    /// schedule trigger ticks next at its next tick after now; any other has no row. Call it
    /// after a workflow is created, changed, enabled, disabled or deleted.
    pub async fn sync_schedule(&self, account_id: &str, workflow_id: &str) -> Result<()> {
        let now = self.clock.now();
        match self.scheduled(account_id, workflow_id).await?.and_then(|s| s.cron.next_after(now, s.tz)) {
            Some(next) => self.store.upsert_schedule(workflow_id, account_id, next).await,
            None => self.store.delete_schedule(workflow_id).await,
        }
    }

    /// The workflow's current schedule, if it is enabled and has a schedule trigger.
    async fn scheduled(&self, account_id: &str, workflow_id: &str) -> Result<Option<Scheduled>> {
        let Some(row) = self.store.workflow(account_id, workflow_id).await?.filter(|w| w.enabled == 1) else {
            return Ok(None);
        };
        let workflow = self.workflow(&row.id, row.version).await?;
        let Trigger::Schedule { cron, timezone, catch_up } = &workflow.trigger else { return Ok(None) };
        let name = match timezone {
            Some(t) => t.clone(),
            None => self.account(account_id).await?.timezone,
        };
        let tz = name.parse().unwrap_or(chrono_tz::UTC);
        Ok(Some(Scheduled { row, cron: cron.clone(), catch_up: *catch_up, tz }))
    }

    /// Fires every due tick (the single step of the scheduler loop; tests call it directly).
    /// Returns how many runs it started.
    pub async fn fire_due_schedules(&self) -> Result<usize> {
        let now = self.clock.now();
        let lease_until = crate::clock::after(now, self.config.lease);
        let mut started = 0;
        for due in self.store.claim_schedules(now, lease_until, 100).await? {
            let Some(Scheduled { row, cron, catch_up, tz }) = self.scheduled(&due.account_id, &due.workflow_id).await? else {
                self.store.delete_schedule(&due.workflow_id).await?;
                continue;
            };
            let mut ticks = vec![due.next_tick];
            ticks.extend(cron.ticks_between(due.next_tick, now, tz, MAX_CATCH_UP));
            let fire: Vec<i64> = match catch_up {
                CatchUp::All => ticks,
                CatchUp::Latest => ticks.last().copied().into_iter().collect(),
                CatchUp::None => ticks.into_iter().filter(|t| now - t < ON_TIME_MS).collect(),
            };
            for tick in fire {
                let payload = json!({ "scheduled_at": crate::clock::to_rfc3339(tick), "cron": cron.expression() });
                let key = format!("schedule:{}:{tick}", row.id);
                // The same tick again (a pass that died after firing) answers the first answer.
                self.start_one(&row.account_id, &row.id, row.version, payload, "schedule", Some((key, 0)), now).await?;
                started += 1;
            }
            match cron.next_after(now, tz) {
                Some(next) => self.store.advance_schedule(&due.workflow_id, lease_until, next).await?,
                None => self.store.delete_schedule(&due.workflow_id).await?,
            }
        }
        Ok(started)
    }
}

/// An enabled scheduled workflow: its row, its current schedule and the timezone it ticks in.
struct Scheduled {
    row: crate::store::WorkflowRow,
    cron: Box<CronSpec>,
    catch_up: CatchUp,
    tz: chrono_tz::Tz,
}
