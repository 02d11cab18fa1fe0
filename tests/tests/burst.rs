//! 120 tasks submitted at once to a node with 120 slots: the load that broke Batch's own
//! agent with engine timeouts (Azure/Batch#4). Every task must succeed and every container
//! must be removed.

use berth_tests::*;
use serde_json::Value;

#[test]
fn burst_of_120_tasks() {
    let n = TestNode::new("burst");
    let tasks: Vec<Value> = (0..120)
        .map(|i| task(&format!("b{i}"), "true", ""))
        .collect();
    let r = n.run(&["--slots", "120"], &Value::Array(tasks));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let done = r.tasks();
    assert_eq!(done.len(), 120);
    assert!(done
        .iter()
        .all(|t| t["executionInfo"]["result"] == "success"));
    assert!(n.containers_left().is_empty());
}
