from django.db import migrations, models


class Migration(migrations.Migration):
    """LedgerEntry, moved from the ``tasks`` app: its table (created by tasks 0001) stays."""

    initial = True

    dependencies = [
        ('tasks', '0004_move_ledgerentry_to_demo'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='LedgerEntry',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('order_id', models.CharField(help_text='The order charged.', max_length=64)),
                    ('amount_cents', models.PositiveIntegerField(help_text='Amount charged.')),
                    ('created_at', models.DateTimeField(auto_now_add=True, help_text='When.')),
                ],
                options={
                    'db_table': 'tasks_ledgerentry',
                    'ordering': ('-created_at',),
                    'indexes': [models.Index(fields=['order_id'], name='tasks_ledger_order_idx')],
                },
            ),
        ]),
    ]
