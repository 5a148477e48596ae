-- One event at the first second of 1970 and one in the last window of year 9999, in every speed
-- table, as the speed layer writes them (their triggers list the hours in speed_window_hours):
-- no serving view may enumerate the empty hours between them and the year of data.
INSERT INTO bytes_agg_antenna (antenna_id, date, sum_antenna_bytes) VALUES
    ('antenna-1', timestamptz '1970-01-01 00:00:00+00', 1000),
    ('antenna-1', timestamptz '9999-12-31 23:55:00+00', 1000);
INSERT INTO bytes_agg_app (app, date, sum_app_bytes) VALUES
    ('SKYPE', timestamptz '1970-01-01 00:00:00+00', 1000),
    ('SKYPE', timestamptz '9999-12-31 23:55:00+00', 1000);
INSERT INTO bytes_agg_user (id, date, sum_user_bytes)
SELECT id, moment, 1000
FROM (SELECT min(id) AS id FROM user_metadata) AS first_user
CROSS JOIN (VALUES (timestamptz '1970-01-01 00:00:00+00'), (timestamptz '9999-12-31 23:55:00+00')) AS far (moment);
