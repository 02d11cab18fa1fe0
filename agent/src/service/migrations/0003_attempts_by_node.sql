-- A node's attempts, newest last: its recent tasks (`recentTasks` on a node's GET) and
-- its `totalTasksRun` read these without walking every attempt of the pool.
CREATE INDEX attempts_node ON attempts (pool_id, node_id, id);
