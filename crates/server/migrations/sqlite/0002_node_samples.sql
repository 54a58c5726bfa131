-- Each node's traffic, one row per sample interval (requests, server errors, p99), for the
-- console's chart of what each update cost. Kept for `sample_retention_hours`.
CREATE TABLE node_sample (
    node_id INTEGER NOT NULL REFERENCES node (id),
    at INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    p99_ms REAL NOT NULL,
    PRIMARY KEY (node_id, at)
);
CREATE INDEX node_sample_at ON node_sample (at);
-- The chart's update markers are a node's steps in the audit log.
CREATE INDEX audit_actor_at ON audit (actor, at);
