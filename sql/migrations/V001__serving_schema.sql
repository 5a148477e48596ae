-- Tables of the data contract (docs/contract.md §2, §5, §7). Keys are the primary keys;
-- every `date` is timestamptz and holds a UTC window or hour start.

CREATE TABLE user_metadata (
    id    text   PRIMARY KEY,
    name  text   NOT NULL,
    email text   NOT NULL UNIQUE,
    quota bigint NOT NULL CHECK (quota >= 0)
);

-- Speed layer: 5-minute tumbling windows, upserted while the window is open.
CREATE TABLE bytes_agg_antenna (
    antenna_id        text        NOT NULL,
    date              timestamptz NOT NULL,
    sum_antenna_bytes bigint      NOT NULL CHECK (sum_antenna_bytes >= 0),
    PRIMARY KEY (antenna_id, date)
);

CREATE TABLE bytes_agg_user (
    id             text        NOT NULL,
    date           timestamptz NOT NULL,
    sum_user_bytes bigint      NOT NULL CHECK (sum_user_bytes >= 0),
    PRIMARY KEY (id, date)
);

CREATE TABLE bytes_agg_app (
    app           text        NOT NULL,
    date          timestamptz NOT NULL,
    sum_app_bytes bigint      NOT NULL CHECK (sum_app_bytes >= 0),
    PRIMARY KEY (app, date)
);

-- Batch layer: one UTC hour, replaced atomically by each run of that hour.
CREATE TABLE bytes_agg_antenna_1h (
    antenna_id        text        NOT NULL,
    date              timestamptz NOT NULL,
    sum_antenna_bytes bigint      NOT NULL,
    PRIMARY KEY (antenna_id, date)
);

CREATE TABLE bytes_agg_user_1h (
    email          text        NOT NULL,
    date           timestamptz NOT NULL,
    sum_user_bytes bigint      NOT NULL,
    PRIMARY KEY (email, date)
);

CREATE TABLE bytes_agg_app_1h (
    app           text        NOT NULL,
    date          timestamptz NOT NULL,
    sum_app_bytes bigint      NOT NULL,
    PRIMARY KEY (app, date)
);

CREATE TABLE users_over_quota_1h (
    email          text        NOT NULL,
    date           timestamptz NOT NULL,
    quota          bigint      NOT NULL,
    sum_user_bytes bigint      NOT NULL,
    PRIMARY KEY (email, date)
);

-- The last micro-batch of each streaming query whose aggregates were applied. Updated in the
-- same transaction as the aggregates, so a replayed micro-batch is recognised and skipped.
-- The counters are exact for the same reason: they move only with a newly applied batch.
CREATE TABLE speed_layer_progress (
    query_id          text        PRIMARY KEY,
    last_batch_id     bigint      NOT NULL,
    valid_events      bigint      NOT NULL DEFAULT 0,
    quarantined_events bigint     NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
