"""The search vector is written by the services from masked arguments (dlq.masking.search_text):
the trigger, which read the arguments as stored (secrets included), goes. Every row is
rewritten in batches: its message, traceback and attempts scrubbed of its arguments' secrets
(what capture now does), and its vector rebuilt from masked values."""
from django.db import migrations

DROP = """
DROP TRIGGER IF EXISTS dlq_deadletter_search ON dlq_deadletter;
DROP FUNCTION IF EXISTS dlq_deadletter_search_update();
"""


def rebuild(apps, schema_editor):  # type: ignore[no-untyped-def]
    from django.contrib.postgres.search import SearchVector
    from django.db.models import Value

    from dlq.masking import scrub, search_text, secret_values

    DeadLetter = apps.get_model("dlq", "DeadLetter")
    last = 0
    while True:
        rows = list(DeadLetter.objects.filter(pk__gt=last).order_by("pk").only(
            "task_name", "exception_type", "exception_message", "traceback", "args", "kwargs", "headers",
            "attempts")[:1000])
        if not rows:
            return
        for row in rows:
            secrets = secret_values(row.args, row.kwargs, row.headers)
            message, traceback = scrub(row.exception_message, secrets), scrub(row.traceback, secrets)
            attempts = [{**a, "message": scrub(str(a.get("message", "")), secrets)} if isinstance(a, dict) else a
                        for a in row.attempts or []]
            text = search_text(task_name=row.task_name, exception_type=row.exception_type, exception_message=message,
                               traceback=traceback, args=row.args, kwargs=row.kwargs)
            DeadLetter.objects.filter(pk=row.pk).update(exception_message=message, traceback=traceback,
                                                        attempts=attempts,
                                                        search=SearchVector(Value(text), config="simple"))
        last = rows[-1].pk


class Migration(migrations.Migration):
    dependencies = [("dlq", "0013_audit_indexes")]

    operations = [
        migrations.RunSQL(DROP, migrations.RunSQL.noop),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
