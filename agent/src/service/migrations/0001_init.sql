-- berth service schema, version 1. Applied once, in a transaction, under the migration
-- advisory lock (service/db/migrate.rs). Ids keep the case they were given; uniqueness is
-- case-insensitive as in Batch (the *_key columns hold the lower-case id).
--
-- What is hot and what is cold (pool-mode design notes, section 2): `ready` is the small
-- claimable set (insert when a task becomes claimable, delete on claim); `tasks` is the
-- large table and is never scanned by a claim.

CREATE TABLE pools (
    id                  text PRIMARY KEY,
    id_key              text NOT NULL UNIQUE,
    -- Batch's pool add body as given (PoolSpec plus taskSchedulingPolicy).
    spec                jsonb NOT NULL,
    task_slots_per_node integer NOT NULL CHECK (task_slots_per_node >= 1),
    node_fill_type      text NOT NULL DEFAULT 'spread' CHECK (node_fill_type IN ('spread', 'pack')),
    -- Lease timers in milliseconds (NULL self-fence/requeue: the "keep" profile).
    heartbeat_ms        bigint NOT NULL,
    unknown_ms          bigint NOT NULL,
    self_fence_ms       bigint,
    requeue_ms          bigint,
    state               text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleting')),
    -- Set by the lease sweeper while too many of the pool's nodes lapsed at once: nothing
    -- is requeued and every node of the pool shows the error (service/sweep.rs).
    mass_loss_brake     boolean NOT NULL DEFAULT false,
    creation_time       timestamptz NOT NULL DEFAULT now(),
    last_modified       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    seq                 bigserial UNIQUE,
    id                  text PRIMARY KEY,
    id_key              text NOT NULL UNIQUE,
    pool_id             text NOT NULL,
    priority            integer NOT NULL DEFAULT 0,
    -- -1: no cap.
    max_parallel        integer NOT NULL DEFAULT -1,
    -- Live attempts of this job (kept by claim and completion, for maxParallelTasks).
    running             integer NOT NULL DEFAULT 0 CHECK (running >= 0),
    state               text NOT NULL,
    -- The JobView as the API shows it.
    view                jsonb NOT NULL,
    creation_time       timestamptz NOT NULL DEFAULT now(),
    last_modified       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_pool ON jobs (pool_id);

CREATE TABLE tasks (
    seq                 bigserial PRIMARY KEY,
    job_id              text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    id_key              text NOT NULL,
    state               text NOT NULL,
    required_slots      integer NOT NULL DEFAULT 1,
    -- Whole GPUs the task's containerRunOptions ask for (0: none).
    gpus                integer NOT NULL DEFAULT 0,
    -- The TaskView as the API shows it.
    view                jsonb NOT NULL,
    -- Fencing: the only attempt whose reports count; NULL while none is live.
    current_attempt     bigint,
    node_id             text,
    requeue_count       integer NOT NULL DEFAULT 0,
    -- berth's own: runs lost with their node (Batch's internal retry), counted apart.
    system_retry_count  integer NOT NULL DEFAULT 0,
    -- Dependencies not yet satisfied; the task enters `ready` when this reaches 0.
    waiting_on          integer NOT NULL DEFAULT 0,
    last_modified       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, id_key)
);
CREATE INDEX tasks_job_state ON tasks (job_id, state);
CREATE INDEX tasks_attempt ON tasks (current_attempt) WHERE current_attempt IS NOT NULL;

-- Task dependencies, one row per (dependent, dependency), ranges expanded at add.
CREATE TABLE task_deps (
    job_id              text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task_key            text NOT NULL,
    depends_on_key      text NOT NULL,
    PRIMARY KEY (job_id, depends_on_key, task_key)
);

-- The claimable set: small, hot, vacuumed often.
CREATE TABLE ready (
    task_seq            bigint PRIMARY KEY REFERENCES tasks (seq) ON DELETE CASCADE,
    pool_id             text NOT NULL,
    job_id              text NOT NULL,
    job_priority        integer NOT NULL,
    job_seq             bigint NOT NULL,
    required_slots      integer NOT NULL,
    gpus                integer NOT NULL DEFAULT 0
);
CREATE INDEX ready_order ON ready (pool_id, job_priority DESC, job_seq, task_seq);
ALTER TABLE ready SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
                       autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 500);

CREATE TABLE nodes (
    pool_id             text NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    -- The enrolment that owns this node id now; older epochs are superseded.
    epoch               bigint NOT NULL,
    token_hash          bytea NOT NULL,
    -- Batch's node state: what the node reported, or `unknown` when its lease lapsed.
    state               text NOT NULL,
    scheduling_state    text NOT NULL DEFAULT 'enabled',
    -- The last ComputeNode the node sent.
    report              jsonb NOT NULL,
    file_address        text,
    slots               integer NOT NULL,
    used_slots          integer NOT NULL DEFAULT 0 CHECK (used_slots >= 0),
    gpus                integer NOT NULL DEFAULT 0,
    used_gpus           integer NOT NULL DEFAULT 0,
    last_heartbeat      timestamptz NOT NULL,
    -- When the node last asked for work (spread/pack count only nodes asking).
    last_poll           timestamptz,
    -- The end of the node's current claim long poll: spread/pack weigh only nodes asking
    -- for work (poll_until within the last 3 s), at one write per poll.
    poll_until          timestamptz,
    -- The free slots the node said it had when it last asked (its own count caps ours).
    poll_free_slots     integer,
    state_transition_time timestamptz NOT NULL,
    -- Set by removenodes: the node leaves once its attempts are dealt with.
    removed             boolean NOT NULL DEFAULT false,
    PRIMARY KEY (pool_id, id)
);

CREATE SEQUENCE node_epochs;

-- One row per enrolment: a node token is `<epoch>.<secret>`, found here by its epoch and
-- checked against its SHA-256; it is good only while the node's row has that epoch.
CREATE TABLE enrolments (
    epoch               bigint PRIMARY KEY,
    pool_id             text NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    node_id             text NOT NULL,
    token_hash          bytea NOT NULL,
    -- Shown to the node's file address when the service proxies a file read.
    proxy_token         text NOT NULL,
    created             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attempts (
    id                  bigserial PRIMARY KEY,
    task_seq            bigint NOT NULL REFERENCES tasks (seq) ON DELETE CASCADE,
    pool_id             text NOT NULL,
    node_id             text NOT NULL,
    epoch               bigint NOT NULL,
    -- live -> completed | requeued | lost | terminated | fenced
    state               text NOT NULL DEFAULT 'live',
    required_slots      integer NOT NULL,
    gpus                integer NOT NULL DEFAULT 0,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz,
    -- A command still owed to the node for this attempt (fence, terminate), until done.
    pending_command     text
);
CREATE INDEX attempts_live ON attempts (pool_id, node_id) WHERE state = 'live';
CREATE INDEX attempts_pending ON attempts (pool_id, node_id) WHERE pending_command IS NOT NULL;

-- Jobs whose end a node must still hear of (EndJob), per node that ran a task of it.
CREATE TABLE job_nodes (
    job_id              text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    pool_id             text NOT NULL,
    node_id             text NOT NULL,
    -- The node's JobOnNode report (preparation/release info), for the prep/release status.
    info                jsonb,
    end_sent            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, pool_id, node_id)
);
