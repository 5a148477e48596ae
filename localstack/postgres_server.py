"""PostgreSQL for the serving tables: a local server from the distribution's binaries, or PG_DSN's.

Without PG_DSN in the environment, `up` runs a private cluster under the state directory that
listens on the host and port of the default DSN, with the DSN's role (password auth over TCP,
which Spark's JDBC driver needs) and database. With PG_DSN set it starts nothing and only checks
that the server answers. PostgreSQL refuses to run as root, so as root the server and its tools
run as the `postgres` system user that the Debian package creates.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common.errors import CommandError, first_line
from common.settings import REPO_ROOT, pg_dsn, state_dir
from localstack import processes
from localstack.ports import require_free_port

DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
STARTUP_TIMEOUT_S = 60
BOOTSTRAP_SQL = REPO_ROOT / "sql" / "bootstrap_local_server.sql"
SETTINGS_FILE_NAME = "platform.conf"


@dataclass(frozen=True)
class PostgresPaths:
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def sockets(self) -> Path:
        """Unix socket folder: inside the state directory, since /var/run/postgresql may not
        exist."""
        return self.home / "run"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def settings_file(self) -> Path:
        return self.data / SETTINGS_FILE_NAME


def paths() -> PostgresPaths:
    """The server's folder: in the state dir, unless the `postgres` user running a root-started
    server cannot walk down to it (a checkout under /root, say); then one in that user's home,
    named after the state dir so that two checkouts never share a cluster."""
    home = state_dir() / "postgres"
    if runs_as_root() and not reachable_by_others(home):
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        home = Path(server_user_home()) / f"mobile-usage-platform-{digest}"
    return PostgresPaths(home)


def reachable_by_others(folder: Path) -> bool:
    return all(
        parent.stat().st_mode & 0o001 for parent in folder.resolve().parents if parent.exists()
    )


def server_user_home() -> str:
    try:
        return pwd.getpwnam(SERVER_USER).pw_dir
    except KeyError:
        return "/var/lib/postgresql"


def is_external() -> bool:
    """PG_DSN set in the environment means: use that server, start none."""
    return "PG_DSN" in os.environ


def dsn_parts(dsn: str) -> dict[str, str]:
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        return parse_dsn(dsn)
    except ProgrammingError as error:  # libpq's message
        raise CommandError(
            f"PG_DSN is not a valid libpq DSN ({first_line(error)}); e.g. "
            "postgresql://user:pw@host:5432/db"
        ) from None


def masked(dsn: str) -> str:
    """The DSN with its password replaced, for messages."""
    parts = urlsplit(dsn)
    if parts.scheme and parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"password\s*=\s*\S+", "password=***", dsn)


def local_address() -> tuple[str, int]:
    parts = dsn_parts(pg_dsn())
    return parts.get("host", "127.0.0.1"), int(parts.get("port", 5432))


# --- what runs -------------------------------------------------------------------------------


def our_running_pid() -> int | None:
    """The postmaster pid of the cluster in our data folder, if it runs."""
    pid = processes.read_pid(paths().data / "postmaster.pid")
    if pid is None or not processes.is_running(pid):
        return None
    return pid


def answers(dsn: str, timeout_s: int = 5) -> str | None:
    """None if a session opens and answers; else the first line of the reason it does not."""
    import psycopg2

    try:
        with (
            psycopg2.connect(dsn, connect_timeout=timeout_s) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT 1")
        connection.close()
        return None
    except psycopg2.Error as error:
        return first_line(error) or type(error).__name__


def preflight() -> None:
    """Fail early, before any download, if a local server is needed but cannot start."""
    if is_external() or our_running_pid() is not None:
        return
    host, port = local_address()
    require_free_port(
        host,
        port,
        "PostgreSQL, from the default PG_DSN",
        "set PG_DSN to use a server that already runs",
    )
    binaries_dir()
    if runs_as_root():
        require_server_user()
        require_reachable_by_server_user(paths().home)


def up() -> str:
    dsn = pg_dsn()
    if is_external():
        reason = answers(dsn, timeout_s=10)
        if reason is not None:
            raise CommandError(
                f"PostgreSQL at PG_DSN={masked(dsn)} is not reachable ({reason}); check PG_DSN "
                "and the server, or unset PG_DSN to start a local server"
            )
        return f"postgres: using {masked(dsn)} (PG_DSN)"
    pid = our_running_pid()
    if pid is not None:
        ensure_role_and_database(binaries_dir())
        wait_until_answering(dsn)
        return f"postgres: already running (pid {pid}) at {masked(dsn)}"
    started = time.monotonic()
    bin_dir = binaries_dir()
    if not (paths().data / "PG_VERSION").exists():
        init_cluster(bin_dir)
    start_server(bin_dir)
    ensure_role_and_database(bin_dir)
    wait_until_answering(dsn)
    return (
        f"postgres: started (pid {our_running_pid()}) at {masked(dsn)} in "
        f"{time.monotonic() - started:.1f} s"
    )


def down() -> str:
    if is_external():
        return f"postgres: {masked(pg_dsn())} is external (PG_DSN), left alone"
    pid = our_running_pid()
    if pid is None:
        return "postgres: not running"
    result = run_as_server_user(
        [
            str(binaries_dir() / "pg_ctl"),
            "stop",
            "-D",
            str(paths().data),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
        ]
    )
    if result.returncode != 0:
        raise CommandError(
            f"PostgreSQL (pid {pid}) did not stop: {first_line(result.stdout)}; see {paths().log}"
        )
    return f"postgres: stopped (pid {pid})"


def status() -> str:
    dsn = pg_dsn()
    if is_external():
        reason = answers(dsn)
        return f"postgres: external {masked(dsn)}, " + (
            "answering" if reason is None else f"NOT answering ({reason})"
        )
    pid = our_running_pid()
    if pid is None:
        return "postgres: not running"
    reason = answers(dsn)
    health = "answering" if reason is None else f"NOT answering ({reason})"
    return f"postgres: running (pid {pid}) at {masked(dsn)}, {health}; log {paths().log}"


# --- binaries and the user that runs them ----------------------------------------------------


def binaries_dir() -> Path:
    """The newest server binaries: Debian's versioned folders first, then PATH."""
    found = find_binaries_dir()
    if found is None:
        raise CommandError(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
            "install them with `scripts/system-packages.sh postgresql` (what `make up` runs; "
            "Debian/Ubuntu: `sudo apt-get install -y postgresql`) or set PG_DSN to an existing "
            "server"
        )
    return found


def find_binaries_dir() -> Path | None:
    debian = [Path(d) for d in glob.glob(DEBIAN_BINARIES) if (Path(d) / "pg_ctl").exists()]
    if debian:
        return max(debian, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def runs_as_root() -> bool:
    return os.geteuid() == 0


def require_server_user() -> None:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise CommandError(
            f"PostgreSQL refuses to run as root and there is no `{SERVER_USER}` system user;"
            f" create it (`useradd --system {SERVER_USER}`) or run `make up` as a normal user"
        ) from None


def require_reachable_by_server_user(folder: Path) -> None:
    """The server user must be able to walk down to its data folder through our parents."""
    for parent in folder.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise CommandError(
                f"the `{SERVER_USER}` user cannot enter {parent}, so PostgreSQL cannot reach its "
                "data;"
                f" run `chmod o+x {parent}` or set PLATFORM_STATE_DIR to a folder it can reach"
            )


def run_as_server_user(
    command: list[str], input_text: str | None = None
) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the server user (ourselves, or `postgres` when we are root)."""
    if runs_as_root():
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    return subprocess.run(
        command,
        input=input_text,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
    )


def server_superuser() -> str:
    """initdb names the superuser after the OS user running it, which peer auth then accepts."""
    return SERVER_USER if runs_as_root() else getpass.getuser()


# --- the cluster -----------------------------------------------------------------------------


def init_cluster(bin_dir: Path) -> None:
    pg = paths()
    prepare_folders(pg)
    result = run_as_server_user([
        str(bin_dir / "initdb"), "-D", str(pg.data),
        # Local socket: only the OS user owning the server (peer). TCP: passwords, as for any
        # client.
        "--auth-local=peer", "--auth-host=scram-sha-256",
        "--encoding=UTF8", "--locale=C", "--no-instructions",
    ])  # fmt: skip
    pg.log.parent.mkdir(parents=True, exist_ok=True)
    with open(pg.log, "a") as log:
        log.write(result.stdout)
    if result.returncode != 0:
        raise CommandError(
            f"initdb failed ({first_line(result.stdout)}); see {pg.log}, delete {pg.data} and rerun"
        )
    with open(pg.data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n"
            "# Listening address, port and socket folder, rewritten by `make up` on every start.\n"
            f"include_if_exists = '{SETTINGS_FILE_NAME}'\n"
        )


def prepare_folders(pg: PostgresPaths) -> None:
    """Create our folders; as root, hand them (and the log we may have written) to the server
    user."""
    for folder in (pg.home, pg.sockets):
        folder.mkdir(parents=True, exist_ok=True)
    if runs_as_root():
        owner = pwd.getpwnam(SERVER_USER)
        for path in (pg.home, pg.sockets, pg.log):
            if path.exists():
                os.chown(path, owner.pw_uid, owner.pw_gid)


def start_server(bin_dir: Path) -> None:
    pg = paths()
    prepare_folders(pg)
    host, port = local_address()
    write_settings(pg, host, port)
    result = run_as_server_user([
        str(bin_dir / "pg_ctl"), "start", "-D", str(pg.data), "-l", str(pg.log),
        "-w", "-t", str(STARTUP_TIMEOUT_S),
    ])  # fmt: skip
    if result.returncode != 0:
        raise CommandError(
            f"PostgreSQL did not start within {STARTUP_TIMEOUT_S} s "
            f"({first_line(result.stdout)}); see {pg.log}"
        )


def write_settings(pg: PostgresPaths, host: str, port: int) -> None:
    settings = {
        "listen_addresses": host,
        "port": str(port),
        "unix_socket_directories": str(pg.sockets),
    }
    text = "".join(
        f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items()
    )
    pg.settings_file.write_text(text)
    if runs_as_root():
        owner = pwd.getpwnam(SERVER_USER)
        os.chown(pg.settings_file, owner.pw_uid, owner.pw_gid)


def ensure_role_and_database(bin_dir: Path) -> None:
    """The DSN's role (with CREATEDB) and database, created over the socket as superuser if
    missing."""
    parts = dsn_parts(pg_dsn())
    _, port = local_address()
    result = run_as_server_user(
        [
            str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", str(paths().sockets), "-p", str(port), "-U", server_superuser(), "-d", "postgres",
            "-v", f"role={parts.get('user', 'platform')}",
            "-v", f"password={parts.get('password', '')}",
            "-v", f"dbname={parts.get('dbname', 'platform')}",
            "-f", "-",
        ],
        input_text=BOOTSTRAP_SQL.read_text(),
    )  # fmt: skip
    if result.returncode != 0:
        raise CommandError(
            f"creating the role and database failed: {first_line(result.stdout)}; see {paths().log}"
        )


def wait_until_answering(dsn: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    reason = answers(dsn)
    while reason is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        reason = answers(dsn)
    if reason is not None:
        raise CommandError(
            f"PostgreSQL runs but {masked(dsn)} does not answer ({reason}); see {paths().log}"
        )
