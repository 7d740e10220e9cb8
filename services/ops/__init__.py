"""Operations: running the platform's services on one machine (not domain code).

``services.ops.airflow``: the local Airflow 3 (settings, setup, start/stop under supervisord,
a small REST client). The domain packages (``services.pipeline``, ``services.store``, ...)
do not import from here; only the command line does.
"""
