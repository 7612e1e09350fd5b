"""The migrations on both backends, and the property the stream cursors rely on."""

from sqlalchemy import delete, insert, select

from db.models import Account, Pipeline, PipelineRun, RunEvent, StepLogChunk
from db.session import make_engine, make_session_factory


def test_event_and_log_ids_are_never_reused_after_the_newest_rows_are_deleted(database_url):
    sessions = make_session_factory(make_engine(database_url))
    with sessions.begin() as session:
        account = Account(name="ids")
        session.add(account)
        session.flush()
        pipeline = Pipeline(account_id=account.id, name="p", slug=f"p-{account.id}")
        session.add(pipeline)
        session.flush()
        run = PipelineRun(account_id=account.id, pipeline_id=pipeline.id, run_number=1)
        session.add(run)
        session.flush()
        ids = {}
        for table, row in ((RunEvent, {"account_id": account.id, "run_id": run.id, "pipeline_id": pipeline.id,
                                       "event_type": "run_updated", "payload": {}}),
                           (StepLogChunk, {"run_id": run.id, "step_id": "s", "attempt": 1, "content": "x"})):
            extra = {"seq": 1} if table is StepLogChunk else {}
            first = session.execute(insert(table).values(**row, **extra).returning(table.id)).scalar_one()
            session.execute(delete(table).where(table.id == first))
            extra = {"seq": 2} if table is StepLogChunk else {}
            second = session.execute(insert(table).values(**row, **extra).returning(table.id)).scalar_one()
            ids[table.__tablename__] = (first, second)
        assert session.scalar(select(RunEvent.id).where(RunEvent.run_id == run.id)) == ids["run_events"][1]
    for first, second in ids.values():
        assert second > first


def test_the_migrations_build_exactly_the_schema_the_models_describe(database_url):
    """A model change without its migration (or the reverse) shows up here, on both backends."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    engine = make_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []
