//! The node's reported state (Batch's `BatchNode` shape), with every transition logged.
//! A watch channel, so the daemon's API and readiness notice can follow it.

use berth_proto::{ComputeNode, NodeAgentInfo, NodeError, NodeState};
use chrono::Utc;
use tokio::sync::watch;

pub struct NodeStatus {
    tx: watch::Sender<ComputeNode>,
}

impl NodeStatus {
    /// A node that has just begun its pool start.
    pub fn new(node_id: &str, pool_id: &str) -> Self {
        let now = Utc::now();
        let (tx, _) = watch::channel(ComputeNode {
            id: node_id.into(),
            pool_id: pool_id.into(),
            state: NodeState::Starting,
            scheduling_state: "enabled".into(),
            state_transition_time: now,
            start_task_info: None,
            errors: vec![],
            images: vec![],
            gpus: None,
            node_agent_info: NodeAgentInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                last_update_time: now,
            },
        });
        NodeStatus { tx }
    }

    pub fn get(&self) -> ComputeNode {
        self.tx.borrow().clone()
    }

    pub fn state(&self) -> NodeState {
        self.tx.borrow().state
    }

    pub fn subscribe(&self) -> watch::Receiver<ComputeNode> {
        self.tx.subscribe()
    }

    pub fn set_state(&self, to: NodeState) {
        self.tx.send_if_modified(|n| {
            if n.state == to {
                return false;
            }
            tracing::info!(from = %n.state, to = %to, "node state");
            n.state = to;
            n.state_transition_time = Utc::now();
            true
        });
    }

    pub fn add_error(&self, e: NodeError) {
        self.update(|n| n.errors.push(e));
    }

    pub fn update(&self, f: impl FnOnce(&mut ComputeNode)) {
        self.tx.send_modify(f);
    }

    /// `running` while a task (not the start task) runs, `idle` otherwise; only from a
    /// schedulable state.
    pub fn set_busy(&self, busy: bool) {
        if self.state().schedulable() {
            self.set_state(if busy {
                NodeState::Running
            } else {
                NodeState::Idle
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let s = NodeStatus::new("n", "p");
        let rx = s.subscribe();
        assert_eq!(s.state(), NodeState::Starting);
        s.set_busy(true);
        assert_eq!(s.state(), NodeState::Starting, "not schedulable yet");
        s.set_state(NodeState::Idle);
        s.set_busy(true);
        assert_eq!(rx.borrow().state, NodeState::Running);
        s.set_busy(false);
        assert_eq!(s.state(), NodeState::Idle);
        s.set_state(NodeState::Unusable);
        s.set_busy(true);
        assert_eq!(s.state(), NodeState::Unusable);
    }
}
