//! A finished container is removed off the task's critical path: the task is recorded as
//! soon as its output is saved, and the container goes in the background (its removal
//! costs the engine a few milliseconds that no task needs to wait for).
//!
//! - A create of the same name (a reactivated task's first attempt) first waits for the
//!   pending removal of that name ([`Removals::settled`]).
//! - Removals run on the node's task tracker, which the process drains before it exits.
//! - A crash before one ends leaves a container that no running task owns: the next
//!   start's sweep removes it.

use super::super::crash::{self, Point};
use super::super::plan::TaskPlan;
use super::super::NodeContext;
use crate::error_chain::Chain;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Containers being removed, by name: `true` once the removal is over.
#[derive(Default)]
pub struct Removals {
    pending: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

impl Removals {
    /// Removes container `id` (named `name`) in the background.
    pub fn start(rt: &NodeContext, plan: &TaskPlan, name: String, id: String) {
        let (done, rx) = watch::channel(false);
        let me = rt.removals.clone();
        me.lock().insert(name.clone(), rx);
        let engine = rt.engine.clone();
        // Only the crash tests' armed process needs the plan after this point.
        let armed = crash::is_armed(Point::AfterRemove).then(|| plan.clone());
        rt.tasks.spawn(async move {
            if let Err(e) = engine.remove(&id).await {
                tracing::error!(container = %id, error = %Chain(&e), "could not remove the container");
            }
            if let Some(plan) = armed {
                crash::at(Point::AfterRemove, &plan);
            }
            me.lock().remove(&name);
            done.send(true).ok();
        });
    }

    /// Resolves once no removal of a container named `name` is pending.
    pub async fn settled(&self, name: &str) {
        let pending = self.lock().get(name).cloned();
        if let Some(mut rx) = pending {
            // A dropped sender (the runtime going down) ends the wait as well.
            rx.wait_for(|over| *over).await.ok();
        }
    }

    /// Resolves once every removal started so far is over.
    pub async fn idle(&self) {
        let pending: Vec<_> = self.lock().values().cloned().collect();
        for mut rx in pending {
            rx.wait_for(|over| *over).await.ok();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        // The map stays whole whatever panicked while holding it.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settled_waits_for_that_name_only() {
        let r = Removals::default();
        let (tx, rx) = watch::channel(false);
        r.lock().insert("a".into(), rx);
        // Another name is not held up.
        tokio::time::timeout(std::time::Duration::from_millis(100), r.settled("b"))
            .await
            .unwrap();
        let wait = r.settled("a");
        tokio::pin!(wait);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "still pending"
        );
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_millis(100), wait)
            .await
            .unwrap();
    }
}
