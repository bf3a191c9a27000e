"""The full-text vector: from a stored generated column to a trigger-maintained column.

PostgreSQL recomputes a stored generated column on every UPDATE of the row, so moving rows
between statuses (bulk requeues) paid for ``to_tsvector`` over the traceback each time. The
trigger recomputes it only on INSERT and on updates that write one of its source columns.
"""
import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations

TRIGGER = """
CREATE OR REPLACE FUNCTION dlq_deadletter_search_update() RETURNS trigger AS $$
BEGIN
  NEW.search := to_tsvector('simple'::regconfig,
      coalesce(NEW.task_name, '') || ' ' || coalesce(NEW.exception_type, '') || ' ' ||
      coalesce(NEW.exception_message, '') || ' ' || coalesce(NEW.traceback, '') || ' ' ||
      coalesce(NEW.args::text, '') || ' ' || coalesce(NEW.kwargs::text, ''));
  RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER dlq_deadletter_search
BEFORE INSERT OR UPDATE OF task_name, exception_type, exception_message, traceback, args, kwargs
ON dlq_deadletter FOR EACH ROW EXECUTE FUNCTION dlq_deadletter_search_update();

UPDATE dlq_deadletter SET task_name = task_name;
"""
UNDO = """
DROP TRIGGER IF EXISTS dlq_deadletter_search ON dlq_deadletter;
DROP FUNCTION IF EXISTS dlq_deadletter_search_update();
"""


class Migration(migrations.Migration):
    dependencies = [("dlq", "0004_reprocess_idempotency")]

    operations = [
        migrations.RemoveIndex(model_name="deadletter", name="dlq_search_gin"),
        migrations.RemoveField(model_name="deadletter", name="search"),
        migrations.AddField(
            model_name="deadletter",
            name="search",
            field=django.contrib.postgres.search.SearchVectorField(
                editable=False, null=True,
                help_text="Full-text vector over task, exception, message, traceback and arguments."),
        ),
        migrations.RunSQL(TRIGGER, UNDO),
        migrations.AddIndex(
            model_name="deadletter",
            index=django.contrib.postgres.indexes.GinIndex(fields=["search"], name="dlq_search_gin"),
        ),
    ]
