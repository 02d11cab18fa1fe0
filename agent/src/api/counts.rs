//! Batch's node count shape, pure: a pool's `dedicated` and `lowPriority` counts, every
//! state's key present. Shared: the service counts in the same shape.

use serde_json::{json, Map, Value};

/// Batch's node count keys, by the (lower-case) node state each counts.
const NODE_STATES: &[(&str, &str)] = &[
    ("creating", "creating"),
    ("starting", "starting"),
    ("waitingforstarttask", "waitingForStartTask"),
    ("starttaskfailed", "startTaskFailed"),
    ("idle", "idle"),
    ("running", "running"),
    ("offline", "offline"),
    ("unusable", "unusable"),
    ("unknown", "unknown"),
    ("leavingpool", "leavingPool"),
    ("rebooting", "rebooting"),
    ("reimaging", "reimaging"),
    ("preempted", "preempted"),
    ("deallocated", "deallocated"),
    ("deallocating", "deallocating"),
    ("upgradingos", "upgradingOS"),
];

/// The counts object of `(state, count)` pairs: every key present, and `total`.
pub fn node_counts(pairs: &[(&str, u64)]) -> Value {
    let mut m = Map::new();
    for (_, key) in NODE_STATES {
        m.insert((*key).into(), json!(0));
    }
    let mut total = 0;
    for (state, n) in pairs {
        total += n;
        if let Some((_, key)) = NODE_STATES
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(state))
        {
            m.insert((*key).into(), json!(n));
        }
    }
    m.insert("total".into(), json!(total));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_counts_have_every_state_and_a_total() {
        let v = node_counts(&[("idle", 2), ("starttaskfailed", 1)]);
        assert_eq!(
            (v["idle"].clone(), v["startTaskFailed"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(v["total"], 3);
        assert_eq!(v["running"], 0);
        assert_eq!(node_counts(&[])["total"], 0);
    }
}
