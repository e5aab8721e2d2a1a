"""Names that moved between the Airflow 3 versions the provider supports (3.1 and later).

Airflow 3.2 moved the task exceptions into the Task SDK (``airflow.sdk.exceptions``); 3.1 has them
only in ``airflow.exceptions``. ``BaseHook`` and the log masker are in the Task SDK from 3.1 on; the
older homes are kept as fallbacks.
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

try:
    from airflow.sdk import BaseHook
except ImportError:  # an Airflow whose Task SDK does not export it yet
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # an Airflow whose Task SDK has no public masker yet
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

__all__ = ["AirflowFailException", "AirflowNotFoundException", "AirflowSkipException", "BaseHook",
           "mask_secret"]
