-- An append-only audit log and a view of the accounts still in use.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    action     text NOT NULL CHECK (action <> ''),
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_user_id_created_at_idx ON audit_log (user_id, created_at DESC);

CREATE VIEW active_users AS
    SELECT id, email, name, created_at
    FROM users
    WHERE status = 'active';
