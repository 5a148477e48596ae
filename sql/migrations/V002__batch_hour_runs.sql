-- What each batch run of an hour read from raw storage, computed straight from the events and not
-- from the aggregates, so the quality checks can hold the aggregates against it (docs/contract.md §8).
CREATE TABLE batch_hour_runs (
    date                 timestamptz PRIMARY KEY,
    valid_events         bigint      NOT NULL CHECK (valid_events >= 0),
    valid_bytes          bigint      NOT NULL CHECK (valid_bytes >= 0),
    unknown_device_bytes bigint      NOT NULL CHECK (unknown_device_bytes >= 0),
    last_streaming_batch bigint      NOT NULL,
    computed_at          timestamptz NOT NULL DEFAULT now()
);
