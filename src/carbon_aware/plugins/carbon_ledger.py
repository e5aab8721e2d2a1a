"""The carbon ledger's listener (:mod:`carbon_aware.ledger.listener`): each task try of an opted-in DAG
measured on its worker. Its own plugin, so that a worker loads the listener without the page's web
app."""
from airflow.plugins_manager import AirflowPlugin

from carbon_aware.ledger import listener


class CarbonLedgerPlugin(AirflowPlugin):
    name = "carbon_ledger"
    listeners = [listener]
