-- nonstop: expand
-- Staff accounts and their API tokens. Passwords and token secrets are stored only as argon2
-- hashes; a token is `<id>.<secret>`, so its row is found by id and its secret checked.

CREATE TABLE app_user (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_token (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES app_user(id),
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
