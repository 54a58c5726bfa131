-- The update server's state: releases and their bundles, nodes, operators, rollouts, audit.
CREATE TABLE release (
    id INTEGER PRIMARY KEY,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    bundle_digest TEXT NOT NULL UNIQUE,
    payload_digest TEXT NOT NULL,
    signer TEXT NOT NULL,
    size INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    published_by TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    UNIQUE (component, version)
);
CREATE TABLE bundle_blob (
    digest TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE node (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    node_group TEXT NOT NULL,
    enrol_token_hash TEXT,
    credential_hash TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    enrolled_at INTEGER,
    connected_to TEXT,
    last_seen INTEGER,
    versions TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE operator (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE operator_token (
    token_hash TEXT PRIMARY KEY,
    operator_id INTEGER NOT NULL REFERENCES operator (id),
    expires_at INTEGER NOT NULL
);
CREATE TABLE rollout (
    id INTEGER PRIMARY KEY,
    release_id INTEGER NOT NULL REFERENCES release (id),
    state TEXT NOT NULL,
    current_wave INTEGER NOT NULL,
    waves INTEGER NOT NULL,
    wave_plan TEXT NOT NULL,
    reason TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE rollout_target (
    rollout_id INTEGER NOT NULL REFERENCES rollout (id),
    node_id INTEGER NOT NULL REFERENCES node (id),
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    sent_at INTEGER,
    live_ms INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, node_id)
);
CREATE INDEX rollout_target_state ON rollout_target (state, rollout_id);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
