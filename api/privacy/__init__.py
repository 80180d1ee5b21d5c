"""What is kept about people, and for how long: the audit trail, idempotency keys, the retention purge."""
