"""`make demo`: one simulated hour through the whole local pipeline, then what it computed.

The simulator emits the last complete UTC hour into Kafka (a few malformed records and unknown
devices included, to show the quarantine), the streaming job drains the topic, Airflow runs
`batch_hourly` for that hour, and both layers' totals are read back from PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from common import settings
from spark_jobs.storage import StorageLayout

PER_ANTENNA = """
    SELECT antenna_id, sum(sum_antenna_bytes) FROM bytes_agg_antenna
    WHERE date >= %(hour)s AND date < %(hour)s + interval '1 hour' GROUP BY 1 ORDER BY 1"""
PER_APP = """
    SELECT app, sum(sum_app_bytes) FROM bytes_agg_app
    WHERE date >= %(hour)s AND date < %(hour)s + interval '1 hour' GROUP BY 1 ORDER BY 2 DESC"""
HOURLY_ANTENNA = (
    "SELECT antenna_id, sum_antenna_bytes FROM bytes_agg_antenna_1h "
    "WHERE date = %(hour)s ORDER BY 1"
)
HOURLY_APP = "SELECT app, sum_app_bytes FROM bytes_agg_app_1h WHERE date = %(hour)s ORDER BY 2 DESC"
HOURLY_OVER_QUOTA = (
    "SELECT email, sum_user_bytes, quota FROM users_over_quota_1h "
    "WHERE date = %(hour)s ORDER BY 2 DESC"
)
PER_USER = (
    "\n    SELECT u.email, sum(a.sum_user_bytes), u.quota FROM bytes_agg_user a"
    " JOIN user_metadata u USING (id)\n"
    "    WHERE a.date >= %(hour)s AND a.date < %(hour)s + interval '1 hour'"
    " GROUP BY 1, 3 ORDER BY 2 DESC"
)


def last_complete_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def run_step(title: str, *command: str) -> None:
    print(f"\n==> {title}\n    {' '.join(command)}", flush=True)
    subprocess.run([sys.executable, *command], check=True)


def print_table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    print(f"\n{title}")
    widths = (
        [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
        if rows
        else [len(h) for h in header]
    )
    for row in (header, *rows):
        print(
            "  "
            + "  ".join(
                str(v).rjust(w) if isinstance(v, int) else str(v).ljust(w)
                for v, w in zip(row, widths, strict=True)
            )
        )


def run_batch_hourly(hour: datetime) -> None:
    """Through Airflow, as an operator would: `dags test` takes the end of the hour."""
    end = (hour + timedelta(hours=1)).isoformat()
    command = [
        str(Path(__file__).resolve().parents[1] / "airflow.sh"),
        "dags",
        "test",
        "batch_hourly",
        end,
    ]
    print(
        "\n==> batch layer: Airflow DAG batch_hourly for the hour "
        f"{hour:%H:%M}-{hour + timedelta(hours=1):%H:%M} UTC"
        f"\n    ./airflow.sh dags test batch_hourly {end}",
        flush=True,
    )
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        raise SystemExit("error: batch_hourly failed; its log is above")


def query_all(cur, statements: dict[str, str], hour: datetime) -> dict[str, list[tuple]]:
    results = {}
    for name, statement in statements.items():
        cur.execute(statement, {"hour": hour})
        results[name] = cur.fetchall()
    return results


def main() -> None:
    hour = last_complete_hour()
    hour_text = hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    run_step(
        f"simulating {hour_text} .. +1h into Kafka topic {settings.kafka_topic()}",
        "-m",
        "simulator",
        "--start",
        hour_text,
        "--duration",
        "3600",
        "--rate",
        "0",
        "--unknown-devices",
        "2",
        "--malformed-rate",
        "0.01",
        "--no-progress",
    )
    run_step(
        "draining the topic with the streaming job", "-m", "spark_jobs.streaming", "--available-now"
    )
    run_batch_hourly(hour)

    conn = psycopg2.connect(settings.pg_dsn())
    with conn.cursor() as cur:
        results = query_all(cur, {"antenna": PER_ANTENNA, "app": PER_APP, "user": PER_USER}, hour)
        hourly = query_all(
            cur, {"antenna": HOURLY_ANTENNA, "app": HOURLY_APP, "over": HOURLY_OVER_QUOTA}, hour
        )
        cur.execute("SELECT sum(valid_events), sum(quarantined_events) FROM speed_layer_progress")
        progress = cur.fetchone()
        assert progress is not None  # an aggregate without GROUP BY always returns one row
        events, quarantined = progress
    conn.close()

    print(f"\nSpeed layer totals for the hour starting {hour_text} (sum of its 5-minute windows):")
    print_table("Bytes per antenna", ("antenna_id", "bytes"), results["antenna"])
    print_table("Bytes per app", ("app", "bytes"), results["app"])
    over = [
        (email, total, quota, "over quota" if total > quota else "")
        for email, total, quota in results["user"]
    ]
    print_table("Bytes per user", ("email", "bytes", "quota", ""), over)
    print(f"\nBatch layer, the exact hour {hour_text} (bytes_agg_*_1h, users_over_quota_1h):")
    print_table("Bytes per antenna", ("antenna_id", "bytes"), hourly["antenna"])
    print_table("Bytes per app", ("app", "bytes"), hourly["app"])
    print_table("Users over their hourly quota", ("email", "bytes", "quota"), hourly["over"])
    layout = StorageLayout(settings.storage_root())
    print(f"\nEvents processed so far: {events} valid, {quarantined} quarantined")
    print(f"Raw Parquet:  {layout.raw}  (partitioned by event_hour, then micro-batch)")
    print(
        f"Compacted:    {layout.compacted}  (closed hours, one file each, 5 minutes after they end)"
    )
    print(f"Quarantine:   {layout.quarantine}")
    print(f"Checkpoint:   {layout.streaming_checkpoint}")
    print(f"PostgreSQL:   {settings.pg_dsn()}")


if __name__ == "__main__":
    main()
