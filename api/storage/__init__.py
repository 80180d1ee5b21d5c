"""The database: the SQL tables, the engine and migrations, the embedded Postgres, backup and restore."""
