"""Search analytics (issue #24): what shoppers searched and clicked, aggregated per day, and
online experiments by interleaving.

Raw rows, partitioned by day (declarative range partitions on ``at``, UTC days):

- ``analytics_searches``: one row per search response (each page is one): its ``search_id``,
  the query text as searched (normalised spacing), whether a photo was given, mode, alpha,
  filters, the page's offset and sort, how many products the ranking had and which it
  showed, whether the certificate proved it exact, whether understanding rewrote the query,
  the latency, the index version, and for a search in an experiment the experiment and the
  team (1 = arm A, 2 = arm B) of each shown position. No IP address and no raw session or
  user identifier: ``session_hash`` is an HMAC of the client's session id under a salt that
  rotates daily (services.analytics.privacy).
- ``analytics_events``: ``click`` / ``add_to_cart`` / ``purchase`` of a shown product at a
  position (1-based, in the whole ranking), tied to its search by ``search_id``.

Each has a DEFAULT partition, so a row whose day has no partition yet is kept, never
refused; ``analytics_ensure_partitions`` makes the days ahead (moving any such rows into
their day) and ``analytics_drop_partitions`` drops the days past retention. Both are
SECURITY DEFINER functions of the owner: the pipeline's DAG may call them but may not
create or drop tables attached to the owner's tables itself.

Aggregates (rebuilt per day by the ``fashion_search_analytics`` DAG, idempotent):
``analytics_daily``, ``analytics_queries_daily``, ``analytics_positions_daily``,
``experiment_daily``; ``analytics_hours`` records each hour aggregated.

``experiments``: two ranking configurations (``arm_a``, ``arm_b``: JSON such as
``{"alpha": 0.5}`` or ``{"understanding": false}``) and a traffic share; at most one runs.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RAW = ("analytics_searches", "analytics_events")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE experiments (
            id           serial PRIMARY KEY,
            name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
            arm_a        jsonb NOT NULL CHECK (jsonb_typeof(arm_a) = 'object'),
            arm_b        jsonb NOT NULL CHECK (jsonb_typeof(arm_b) = 'object'),
            traffic      real NOT NULL CHECK (traffic > 0 AND traffic <= 1),
            status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stopped')),
            started_at   timestamptz NOT NULL DEFAULT now(),
            stopped_at   timestamptz,
            impressions  integer NOT NULL CHECK (impressions > 0),  -- the planned sample size
            note         text NOT NULL DEFAULT ''
        );
        CREATE UNIQUE INDEX experiments_one_running ON experiments ((true))
            WHERE status = 'running';

        CREATE TABLE analytics_searches (
            at            timestamptz NOT NULL,
            search_id     uuid NOT NULL,
            session_hash  text,
            query         text,
            has_image     boolean NOT NULL,
            mode          text NOT NULL,
            alpha         real,
            filters       jsonb NOT NULL DEFAULT '{}',
            page_offset   integer NOT NULL,
            sort          text NOT NULL,
            ranked        integer NOT NULL,
            product_ids   integer[] NOT NULL,
            exact         boolean NOT NULL,
            understood    boolean NOT NULL,
            latency_ms    real NOT NULL,
            index_version integer,
            experiment_id integer,
            teams         smallint[]
        ) PARTITION BY RANGE (at);
        CREATE INDEX analytics_searches_id ON analytics_searches (search_id);
        CREATE TABLE analytics_searches_default PARTITION OF analytics_searches DEFAULT;

        CREATE TABLE analytics_events (
            at            timestamptz NOT NULL,
            search_id     uuid NOT NULL,
            kind          text NOT NULL CHECK (kind IN ('click', 'add_to_cart', 'purchase')),
            product_id    integer NOT NULL,
            position      integer NOT NULL CHECK (position >= 1),
            session_hash  text
        ) PARTITION BY RANGE (at);
        CREATE INDEX analytics_events_search ON analytics_events (search_id);
        CREATE TABLE analytics_events_default PARTITION OF analytics_events DEFAULT;

        CREATE TABLE analytics_daily (
            day                 date PRIMARY KEY,
            searches            integer NOT NULL,  -- first pages
            pages               integer NOT NULL,  -- every page, next pages included
            unique_queries      integer NOT NULL,
            zero_result_rate    real,
            click_through_rate  real,
            mean_click_position real,
            abandonment_rate    real,
            latency_p50_ms      real,
            latency_p95_ms      real,
            latency_p99_ms      real,
            exact_share         real,
            clicks              integer NOT NULL,
            add_to_carts        integer NOT NULL,
            purchases           integer NOT NULL,
            unmatched_events    integer NOT NULL,  -- events naming a product not at that place
            computed_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE analytics_queries_daily (
            day                 date NOT NULL,
            query               text NOT NULL,
            searches            integer NOT NULL,
            zero_results        integer NOT NULL,
            clicked_searches    integer NOT NULL,
            clicks              integer NOT NULL,
            mean_click_position real,
            PRIMARY KEY (day, query)
        );
        CREATE TABLE analytics_positions_daily (
            day       date NOT NULL,
            position  integer NOT NULL,
            clicks    integer NOT NULL,
            PRIMARY KEY (day, position)
        );
        CREATE TABLE experiment_daily (
            experiment_id  integer NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
            day            date NOT NULL,
            impressions    integer NOT NULL,
            clicked        integer NOT NULL,
            wins           integer NOT NULL,  -- arm A had more clicks
            losses         integer NOT NULL,  -- arm B had more clicks
            ties           integer NOT NULL,  -- clicked, as many for each
            PRIMARY KEY (experiment_id, day)
        );
        CREATE TABLE analytics_hours (
            hour           timestamptz PRIMARY KEY,
            searches       integer NOT NULL,
            events         integer NOT NULL,
            aggregated_at  timestamptz NOT NULL DEFAULT now()
        );
        """
    )
    op.execute(
        r"""
        CREATE FUNCTION analytics_ensure_partitions(first_day date, days integer)
        RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            parent text;
            d date;
            part text;
            made integer := 0;
        BEGIN
            IF days < 1 OR days > 400 THEN
                RAISE EXCEPTION 'days must be 1 to 400, got %', days;
            END IF;
            FOREACH parent IN ARRAY ARRAY['analytics_searches', 'analytics_events'] LOOP
                FOR i IN 0 .. days - 1 LOOP
                    d := first_day + i;
                    part := parent || '_' || to_char(d, 'YYYYMMDD');
                    CONTINUE WHEN to_regclass(part) IS NOT NULL;
                    -- rows that came before their day's partition wait in the default one
                    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent || '_default');
                    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                   part, parent);
                    EXECUTE format(
                        'WITH moved AS (DELETE FROM %I WHERE at >= %L AND at < %L RETURNING *) '
                        'INSERT INTO %I SELECT * FROM moved',
                        parent || '_default', d::timestamp AT TIME ZONE 'UTC',
                        (d + 1)::timestamp AT TIME ZONE 'UTC', part);
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                   parent, part, d::timestamp AT TIME ZONE 'UTC',
                                   (d + 1)::timestamp AT TIME ZONE 'UTC');
                    -- the API's read-only role reads the aggregates, never the raw rows
                    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fashion_search') THEN
                        EXECUTE format('REVOKE ALL ON %I FROM fashion_search', part);
                    END IF;
                    made := made + 1;
                END LOOP;
            END LOOP;
            RETURN made;
        END
        $$;

        CREATE FUNCTION analytics_drop_partitions(before date)
        RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            part text;
            dropped integer := 0;
        BEGIN
            FOR part IN
                SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent IN ('analytics_searches'::regclass, 'analytics_events'::regclass)
                  AND c.relname ~ '_[0-9]{8}$'
                  AND to_date(right(c.relname, 8), 'YYYYMMDD') < before
            LOOP
                EXECUTE format('DROP TABLE %I', part);
                dropped := dropped + 1;
            END LOOP;
            DELETE FROM analytics_searches_default WHERE at < before::timestamp AT TIME ZONE 'UTC';
            DELETE FROM analytics_events_default WHERE at < before::timestamp AT TIME ZONE 'UTC';
            RETURN dropped;
        END
        $$;

        REVOKE ALL ON FUNCTION analytics_ensure_partitions(date, integer) FROM PUBLIC;
        REVOKE ALL ON FUNCTION analytics_drop_partitions(date) FROM PUBLIC;
        SELECT analytics_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION analytics_ensure_partitions(date, integer)")
    op.execute("DROP FUNCTION analytics_drop_partitions(date)")
    for table in (
        "analytics_hours",
        "experiment_daily",
        "analytics_positions_daily",
        "analytics_queries_daily",
        "analytics_daily",
        *RAW,
        "experiments",
    ):
        op.execute(f"DROP TABLE {table}")
