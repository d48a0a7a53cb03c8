-- Account status as an enum, defaulting to active.
CREATE TYPE user_status AS ENUM ('active', 'suspended', 'deleted');

ALTER TABLE users ADD COLUMN status user_status NOT NULL DEFAULT 'active';

CREATE INDEX users_status_idx ON users (status) WHERE status <> 'active';
