"""What is read: the database as pandas frames, the statistics, the report of an experiment,
its renderings (table, markdown, csv, json), plots and RESULTS.md. Read-only over the store."""
