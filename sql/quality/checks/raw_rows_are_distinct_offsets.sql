-- Each valid record is in the raw storage of its hour once (docs/contract.md §8): the raw rows the
-- run read are as many as their distinct (Kafka partition, offset) pairs. A duplicated raw file,
-- or a micro-batch written twice, makes the rows outnumber the pairs.
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT raw_rows, distinct_offsets, raw_rows - distinct_offsets AS duplicated_rows
FROM batch_hour_runs
WHERE date = %(hour)s AND raw_rows <> distinct_offsets;
