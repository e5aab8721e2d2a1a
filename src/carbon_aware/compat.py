"""Names that moved between the Airflow 3 versions the provider supports (3.1 and later).

Airflow 3.2 moved the task exceptions into the Task SDK (``airflow.sdk.exceptions``); 3.1 has them
only in ``airflow.exceptions``.
"""
from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
    )

__all__ = ["AirflowFailException", "AirflowNotFoundException", "AirflowSkipException"]
