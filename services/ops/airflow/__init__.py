"""A real Airflow 3 for the platform, on this machine: settings, setup, start/stop, REST client.

The package (``from services.ops import airflow``; every name below is re-exported here):
``settings`` (the shared settings, homes, URLs, admin login, :func:`airflow_env`),
``provision`` (the airflow CLI, :func:`setup`), ``celery`` (the Redis broker and the Celery
workers), ``supervisor`` (:func:`start`, :func:`status`, :func:`stop` under supervisord),
``client`` (the REST client), ``wait_db`` (``python -m services.ops.airflow wait-db ...``).

Supervision: **supervisord** (``infra/supervisord.conf``) runs the three components, because
``fashion-search airflow start`` must return once the api-server answers and ``stop`` must
leave no process behind. supervisord daemonises itself, keeps per-program logs and pids,
restarts a crashed component, answers ``status`` and stops each program's whole process
group (``stopasgroup``/``killasgroup``: LocalExecutor workers and task processes included).
Airflow's own ``-D --pid`` flags start daemons but have no stop or status command, and
honcho runs in the foreground (we would still need our own backgrounding, pid file and
kill), so both would keep a home-made supervisor around.

Settings: one source, ``infra/airflow.env`` (also compose's ``env_file:``), plus what depends
on this machine, set by :func:`airflow_env`: ``AIRFLOW_HOME = FASHION_HOME/airflow`` (logs,
supervisord's socket and pid file, secrets, the SimpleAuthManager passwords file), the
metadata database ``airflow`` on the project's PostgreSQL (psycopg 3 driver for both the sync
and async SQLAlchemy URLs), and 127.0.0.1 for every listener:

- ``airflow api-server --host 127.0.0.1`` (UI + REST + execution API);
- ``airflow scheduler --skip-serve-logs`` with the LocalExecutor (the worker log server
  would bind every interface: Airflow 3.3 hard-codes ``host=""``; with a LocalExecutor the
  api-server reads task logs straight from ``AIRFLOW_HOME/logs``);
- ``airflow dag-processor`` parsing the repo's ``dags/`` folder.

No triggerer (no deferrable tasks); ``airflow standalone`` is not used (its log servers listen
on all interfaces). The ``gpu`` pool (1 slot) serialises the encoders.

Database outages: every component starts as ``python -m services.ops.airflow wait-db airflow
...``, which waits (without limit, with backoff) until Airflow's metadata database answers and
then execs the Airflow command (same pid, so supervisord's signals reach Airflow). The
scheduler and dag-processor exit (status 1) when PostgreSQL goes away; supervisord restarts
them, and the waiting restart stays up instead of failing fast, so supervisord never gives up
(FATAL) however long the outage lasts; when the database is back they resume on their own.
More ``startretries`` alone would not do: a restart that fails fast burns one retry per
backoff step (1 s, 2 s, ...), so any count is a limit on the outage's length.

Login: user ``admin`` of the SimpleAuthManager. Its password is ``FASHION_AIRFLOW_PASSWORD``,
or else one generated on the first start and kept in ``AIRFLOW_HOME/admin-password`` (0600);
``fashion-search airflow start`` prints it once, when it is created.

Host header: the api-server answers only requests addressed to ``127.0.0.1`` or ``localhost``
(any port), or to a name listed in Airflow's ``[fashion] allowed_hosts`` setting
(``AIRFLOW__FASHION__ALLOWED_HOSTS=name1,name2``); anything else gets HTTP 400, so a web page
cannot reach it through DNS rebinding. Airflow 3 has no such option; the check is Starlette's
``TrustedHostMiddleware``, added through Airflow's plugin interface (``fastapi_root_middlewares``)
by the plugin ``infra/airflow_plugins/fashion_host_check.py``. :func:`start` verifies that
the check is in force (a request with a foreign Host header must get 400) and stops Airflow
otherwise.

Security headers: the same plugin adds to every api-server answer (the Host check's 400
included) what the project's own API sends: ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``,
``Cross-Origin-Opener-Policy: same-origin`` and a Content-Security-Policy allowing what
Airflow's UI needs (scripts, styles, fonts, connections from its own origin only; inline
styles; ``data:`` images; ``blob:`` workers; ``frame-ancestors 'none'``). :func:`start` checks
them on the login page too, and stops Airflow without them. Airflow's ``/docs`` and
``/redoc`` load Swagger UI and ReDoc from a CDN, which the policy blocks.
"""

from services.ops.airflow.celery import (
    celery_env,
    redis_url,
    worker_command,
    worker_env,
    worker_home,
    worker_hostname,
    write_redis_conf,
)
from services.ops.airflow.client import (
    AirflowAPIError,
    AirflowClient,
    check_host_header,
    check_security_headers,
    missing_security_headers,
    wait_for_api,
)
from services.ops.airflow.provision import (
    host_check_plugin,
    run_airflow,
    setup,
    write_passwords,
)
from services.ops.airflow.settings import (
    ADMIN_PASSWORD_FILE,
    CELERY_COMPONENTS,
    CELERY_CONF,
    CELERY_WORKERS,
    COMPONENTS,
    DAG_ID,
    ENV_FILE,
    EXECUTORS,
    GPU_POOL,
    HOST_CHECK_PLUGIN,
    PLUGINS_DIR,
    SUPERVISORD_CONF,
    AdminLogin,
    admin_login,
    admin_user,
    airflow_env,
    airflow_home,
    base_url,
    metadata_url,
    shared_settings,
)
from services.ops.airflow.supervisor import (
    ComponentStatus,
    running_executor,
    start,
    status,
    stop,
    supervisord_conf,
    wait_for_workers,
)
from services.ops.airflow.wait_db import (
    libpq_url,
    main,
    wait_for_database,
)

__all__ = [
    "ADMIN_PASSWORD_FILE",
    "CELERY_COMPONENTS",
    "CELERY_CONF",
    "CELERY_WORKERS",
    "COMPONENTS",
    "DAG_ID",
    "ENV_FILE",
    "EXECUTORS",
    "GPU_POOL",
    "HOST_CHECK_PLUGIN",
    "PLUGINS_DIR",
    "SUPERVISORD_CONF",
    "AdminLogin",
    "AirflowAPIError",
    "AirflowClient",
    "ComponentStatus",
    "admin_login",
    "admin_user",
    "airflow_env",
    "airflow_home",
    "base_url",
    "celery_env",
    "check_host_header",
    "check_security_headers",
    "host_check_plugin",
    "libpq_url",
    "main",
    "metadata_url",
    "missing_security_headers",
    "redis_url",
    "run_airflow",
    "running_executor",
    "setup",
    "shared_settings",
    "start",
    "status",
    "stop",
    "supervisord_conf",
    "wait_for_api",
    "wait_for_database",
    "wait_for_workers",
    "worker_command",
    "worker_env",
    "worker_home",
    "worker_hostname",
    "write_passwords",
    "write_redis_conf",
]
