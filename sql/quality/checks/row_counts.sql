-- The hour's row counts agree with what its batch run read (batch_hour_runs): an aggregate row
-- needs at least one event, an hour with events has antenna and app rows, users come from
-- user_metadata, and only users can be over quota. The job writes no run for an hour without
-- data, so rows without a run are left over from something else.
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violated expectation.
WITH hour_run AS (
    SELECT count(*) AS batch_runs, coalesce(sum(valid_events), 0)::bigint AS valid_events
    FROM batch_hour_runs WHERE date = %(hour)s
), hour_rows AS (
    SELECT
        (SELECT count(*) FROM bytes_agg_antenna_1h WHERE date = %(hour)s) AS antenna_rows,
        (SELECT count(*) FROM bytes_agg_user_1h WHERE date = %(hour)s) AS user_rows,
        (SELECT count(*) FROM bytes_agg_app_1h WHERE date = %(hour)s) AS app_rows,
        (SELECT count(*) FROM users_over_quota_1h WHERE date = %(hour)s) AS over_quota_rows,
        (SELECT count(*) FROM user_metadata) AS known_users
)
SELECT expectation, antenna_rows, app_rows, user_rows, over_quota_rows, valid_events, known_users
FROM hour_rows
CROSS JOIN hour_run
CROSS JOIN LATERAL (VALUES
    ('aggregate rows exist only with a run in batch_hour_runs',
        batch_runs = 0 AND antenna_rows + user_rows + app_rows + over_quota_rows > 0),
    ('an hour with events has antenna rows and app rows',
        valid_events > 0 AND (antenna_rows = 0 OR app_rows = 0)),
    ('no more antenna, app or user rows than events',
        greatest(antenna_rows, app_rows, user_rows) > valid_events),
    ('no more user rows than users in user_metadata',
        user_rows > known_users),
    ('no more over-quota rows than user rows',
        over_quota_rows > user_rows)
) AS expectations (expectation, violated)
WHERE violated;
