from django.db import migrations


class Migration(migrations.Migration):
    """LedgerEntry (the example tasks' data) moves to the ``demo`` app, installed in development
    only. State only: the table ``tasks_ledgerentry`` stays where it is (unused in production)."""

    dependencies = [
        ('tasks', '0003_move_keys_to_tasks'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name='LedgerEntry')]),
    ]
