"""Many creditors on PostgreSQL: the registry, isolation per creditor, the scheduler and worker jobs."""
