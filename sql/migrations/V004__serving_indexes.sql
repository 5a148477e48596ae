-- Indexes for the serving views and the dashboards (figures: bench/results/serving.json).
-- Every table's primary key leads with its dimension (antenna, user, app), but the views and every
-- dashboard query select by time: an hour of windows for an open hour, a time range for a chart.
-- Each index leads with `date` and carries the key and the value, so those reads are index-only
-- range scans instead of scans of a year of rows.

CREATE INDEX bytes_agg_antenna_by_date ON bytes_agg_antenna (date) INCLUDE (antenna_id, sum_antenna_bytes);
CREATE INDEX bytes_agg_user_by_date ON bytes_agg_user (date) INCLUDE (id, sum_user_bytes);
CREATE INDEX bytes_agg_app_by_date ON bytes_agg_app (date) INCLUDE (app, sum_app_bytes);

CREATE INDEX bytes_agg_antenna_1h_by_date ON bytes_agg_antenna_1h (date) INCLUDE (antenna_id, sum_antenna_bytes);
CREATE INDEX bytes_agg_user_1h_by_date ON bytes_agg_user_1h (date) INCLUDE (email, sum_user_bytes);
CREATE INDEX bytes_agg_app_1h_by_date ON bytes_agg_app_1h (date) INCLUDE (app, sum_app_bytes);
CREATE INDEX users_over_quota_1h_by_date ON users_over_quota_1h (date) INCLUDE (email, quota, sum_user_bytes);
