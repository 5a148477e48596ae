-- layer_freshness (V007) reads the newest event time of the speed layer's micro-batches on every
-- refresh of the Pipeline health dashboard and every `make status`: an index makes that max() one
-- probe of its end instead of a scan of the days the health retention keeps (about 300,000 rows
-- a week at a 2-second trigger).
CREATE INDEX speed_micro_batches_newest_event_time ON speed_micro_batches (newest_event_time);
