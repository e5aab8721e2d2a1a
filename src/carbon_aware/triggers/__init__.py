"""Triggers the sensors and the job defer on (:mod:`.window`)."""
