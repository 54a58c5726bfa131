-- nonstop: expand
-- Waiting-room screens (叫号屏): a screen shows the board of the sessions it is opened for, with
-- a token of its own that reads the board and nothing else (no staff sign-in on a wall screen).
-- The token is 32 random bytes; only its SHA-256 is kept. A revoked screen stops at once.

CREATE TABLE screen (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    revoked_at    INTEGER
);
