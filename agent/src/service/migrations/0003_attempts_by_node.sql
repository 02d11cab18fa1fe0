-- A node's attempts, newest last: its recent tasks (`recentTasks` on a node's GET) and
-- its `totalTasksRun` read these without walking every attempt of the pool.
-- Built while the migration's transaction holds the table: writes to `attempts` (claims,
-- reports) wait until it is done, a few seconds for 10^6 attempts, once.
CREATE INDEX attempts_node ON attempts (pool_id, node_id, id);
