"""Real servers for the tests: an embedded PostgreSQL (migrations applied) and an embedded Redis,
started once per session; each test gets empty tables and an empty Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db.base import Base
from shared.db.migrate import upgrade
from shared.db.session import make_engine, make_sessionmaker
from shared.local_servers import LocalServer, start_postgres, start_redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The benchmark data beside the project, present on the developers' machines only; tests about
# those files are marked `shared_data` and skipped where it is absent. TESTS_SHARED_DATA points
# elsewhere (a folder that does not exist, say) to run the suite as a user's clone would.
SHARED_DATA = Path(os.environ.get("TESTS_SHARED_DATA") or PROJECT_ROOT.parent / "shared" / "data")
# Rows written for the tests (tests/fixtures/data/README.md): what every other test evaluates on.
FIXTURE_DATA = PROJECT_ROOT / "tests" / "fixtures" / "data"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the benchmark data in {SHARED_DATA}, which is absent on this machine")


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def postgres(servers_dir: Path) -> Iterator[LocalServer]:
    server = start_postgres(servers_dir / "postgres")
    upgrade(server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres: LocalServer) -> str:
    return postgres.url


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(db_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions on a clean database; tables are emptied after the test (other processes, such
    as a worker, see committed rows, which a rolled-back outer transaction would hide)."""
    yield make_sessionmaker(db_engine)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[LocalServer]:
    server = start_redis(servers_dir / "redis")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalServer) -> Iterator[str]:
    yield redis_server.url
    Redis.from_url(redis_server.url).flushall()


@pytest.fixture
def redis_conn(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture
def shared_data(request: pytest.FixtureRequest) -> Path:
    """The benchmark data folder, for tests about those files only (marked, so they skip without it)."""
    if request.node.get_closest_marker("shared_data") is None:
        pytest.fail("a test that reads ../shared/data must be marked shared_data (or use fixture_data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Converted packaged models (teacher, causal student) are a cache shared by every test and the
    demo (convert once); GOLD_MODEL_DIR names it as it does for the services."""
    path = Path(os.environ.get("GOLD_MODEL_DIR") or PROJECT_ROOT / ".gold" / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path
