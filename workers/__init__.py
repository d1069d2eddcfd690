"""RQ jobs, API clients and the sync engine. Never imports Flask."""
