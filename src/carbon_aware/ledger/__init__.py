"""The carbon ledger: any DAG opted in (a tag, or the provider's setting) has each task try measured on
its worker by a listener (:mod:`.listener`), priced at the grid's intensity of its own time, and set
beside what the planner would have done with the forecast it had ("shadow", never a saving)."""
