"""Drop two indexes that every bulk status change paid for and no query used (issue 8, S4):
the ``varchar_pattern_ops`` index Django adds beside a unique ``CharField`` (nothing filters
``task_id`` with LIKE) and the events' own foreign-key index (``dlq_event_dl_idx`` starts with
``dead_letter_id``). The unique constraint on ``task_id`` is kept as it is in the database (no
rebuild); only its description in the model state changes."""
from django.db import migrations, models

LIKE_INDEX = "dlq_deadletter_task_id_12b9d17a_like"


class Migration(migrations.Migration):
    dependencies = [("dlq", "0006_triage_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="deadletter", name="task_id",
                    field=models.CharField(help_text="Celery id of the task that died.", max_length=255),
                ),
                migrations.AddConstraint(
                    model_name="deadletter",
                    constraint=models.UniqueConstraint(fields=("task_id",), name="dlq_deadletter_task_id_key"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {LIKE_INDEX}",
                    f"CREATE INDEX IF NOT EXISTS {LIKE_INDEX} ON dlq_deadletter (task_id varchar_pattern_ops)",
                ),
            ],
        ),
        migrations.AlterField(
            model_name="deadletterevent", name="dead_letter",
            field=models.ForeignKey(db_index=False, help_text="The dead letter.",
                                    on_delete=models.deletion.CASCADE, related_name="events", to="dlq.deadletter"),
        ),
    ]
