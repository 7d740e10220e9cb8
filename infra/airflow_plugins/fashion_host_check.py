"""Airflow plugin: the api-server answers only requests addressed to this machine.

Requests whose Host header names 127.0.0.1, localhost or a name in Airflow's setting
``[fashion] allowed_hosts`` (comma-separated; ``AIRFLOW__FASHION__ALLOWED_HOSTS``) are served;
any other Host gets HTTP 400, so a web page cannot reach the loopback server by DNS rebinding.
Airflow 3 has no allowed-hosts option of its own; ``fashion-search airflow start`` points
``AIRFLOW__CORE__PLUGINS_FOLDER`` at this folder and checks the refusal after starting
(services/ops/airflow/).
"""

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from starlette.middleware.trustedhost import TrustedHostMiddleware

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
EXTRA = conf.get("fashion", "allowed_hosts", fallback="")
ALLOWED_HOSTS = [*LOOPBACK_HOSTS, *(h.strip() for h in EXTRA.split(",") if h.strip())]


class FashionHostCheck(AirflowPlugin):
    name = "fashion_host_check"
    fastapi_root_middlewares = [  # noqa: RUF012 - the attribute Airflow reads, as in its docs
        {
            "name": "fashion_host_check",
            "middleware": TrustedHostMiddleware,
            "kwargs": {"allowed_hosts": ALLOWED_HOSTS, "www_redirect": False},
        }
    ]
