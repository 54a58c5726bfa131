-- The update server's state: releases and their bundles, nodes, operators, rollouts, audit.
CREATE TABLE release (
    id BIGSERIAL PRIMARY KEY,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    bundle_digest TEXT NOT NULL UNIQUE,
    payload_digest TEXT NOT NULL,
    signer TEXT NOT NULL,
    size BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    published_by TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    UNIQUE (component, version)
);
CREATE TABLE bundle_blob (
    digest TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE node (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    node_group TEXT NOT NULL,
    enrol_token_hash TEXT,
    credential_hash TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    enrolled_at BIGINT,
    connected_to TEXT,
    last_seen BIGINT,
    versions TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE operator (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE operator_token (
    token_hash TEXT PRIMARY KEY,
    operator_id BIGINT NOT NULL REFERENCES operator (id),
    expires_at BIGINT NOT NULL
);
CREATE TABLE rollout (
    id BIGSERIAL PRIMARY KEY,
    release_id BIGINT NOT NULL REFERENCES release (id),
    state TEXT NOT NULL,
    current_wave BIGINT NOT NULL,
    waves BIGINT NOT NULL,
    wave_plan TEXT NOT NULL,
    reason TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE rollout_target (
    rollout_id BIGINT NOT NULL REFERENCES rollout (id),
    node_id BIGINT NOT NULL REFERENCES node (id),
    wave BIGINT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    sent_at BIGINT,
    live_ms BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, node_id)
);
CREATE INDEX rollout_target_state ON rollout_target (state, rollout_id);
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
