-- The roots of trust the fleet's server processes follow, in order (made with `nonstop trust`,
-- added with `POST /api/v1/trust/roots`). Each process accepts them into its own holder; a node
-- is sent, over its link, every root newer than the one it says it holds.
CREATE TABLE trust_root (
    version BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
-- The root version each node said it holds in its last hello.
ALTER TABLE node ADD COLUMN root_version BIGINT NOT NULL DEFAULT 0;
