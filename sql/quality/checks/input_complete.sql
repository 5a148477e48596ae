-- The run read a complete hour (docs/contract.md §7): when it started, the speed layer had committed,
-- on every Kafka partition, everything Kafka held at the end of the hour's lateness allowance.
-- Only a run forced by hand (--allow-incomplete, which it logs) may publish an hour behind.
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT records_behind, forced
FROM batch_hour_runs
WHERE date = %(hour)s AND records_behind > 0 AND NOT forced;
