"""The city health check (城市体检): lifeline indicators, health index, diagnosis, treatment ledger, report."""
