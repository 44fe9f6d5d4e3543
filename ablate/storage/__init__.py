"""What is kept: the results database's tables, its schema versions and migrations, and the
transactions of a run's life cycle. Nothing here knows about models or training."""
