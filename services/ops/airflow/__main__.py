"""``python -m services.ops.airflow wait-db COMMAND...`` / ``celery-worker NAME``: the entry
point of infra/supervisord.conf's programs (:func:`services.ops.airflow.wait_db.main`)."""

import sys

from services.ops.airflow.wait_db import main

if __name__ == "__main__":
    sys.exit(main())
