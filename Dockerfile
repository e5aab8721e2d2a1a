# The carbon_training image: Airflow 3.3.2 (the version pinned in requirements.lock) plus this project.
# torch's CUDA wheels carry their own CUDA runtime, so the same image trains on a GPU worker or on CPU.
# Build-time network: the Python package registry only.
FROM apache/airflow:3.3.2-python3.11

ENV \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/carbon/dags \
    CARBON_HOME=/opt/carbon/include \
    CARBON_OUTPUT_DIR=/opt/carbon/output

USER root
# The output folder is each container's own (compose mounts no volume there): writable by the group root,
# as compose runs the services as AIRFLOW_UID:0.
RUN mkdir -p /opt/carbon/output && chown -R airflow:root /opt/carbon && chmod -R g+rwX /opt/carbon/output
USER airflow
WORKDIR /opt/carbon

# Dependencies first (the slow layer), from the same lock the tests install.
COPY --chown=airflow:root requirements.lock requirements-tracking.lock /opt/carbon/
# requirements-tracking.lock: MLflow (experiment tracking when MLFLOW_TRACKING_URI or the mlflow_default
# connection is set), pinned against the same lock.
RUN pip install --no-cache-dir -r /opt/carbon/requirements.lock -r /opt/carbon/requirements-tracking.lock

COPY --chown=airflow:root pyproject.toml README.md /opt/carbon/
COPY --chown=airflow:root training /opt/carbon/training
COPY --chown=airflow:root src /opt/carbon/src
COPY --chown=airflow:root dags /opt/carbon/dags
COPY --chown=airflow:root include /opt/carbon/include
# The provider (editable: compose mounts src/ over it) and the demo trainer.
RUN pip install --no-cache-dir --no-deps -e /opt/carbon -e /opt/carbon/training
