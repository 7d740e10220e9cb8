-- Roles by job on a PostgreSQL of your own (the embedded server makes these itself;
-- services/store/roles.py is the same in code). Run as an administrator with psql:
--
--   psql -v owner_pw="'...'" -v pipeline_pw="'...'" -v search_pw="'...'" \
--        -v events_pw="'...'" -v airflow_pw="'...'" -d postgres -f db/roles.sql
--
-- then point the platform at them:
--   DATABASE_OWNER_URL=postgresql://fashion@db/fashion        (fashion-search db migrate)
--   DATABASE_URL=postgresql://fashion_pipeline@db/fashion     (pipeline, sync, DAG tasks)
--   DATABASE_SEARCH_URL=postgresql://fashion_search@db/fashion (the API)
--   DATABASE_EVENTS_URL=postgresql://fashion_events@db/fashion (the API's analytics writer)
-- and Airflow's sql_alchemy_conn at fashion_airflow@db/airflow. `fashion-search db migrate`
-- (as fashion) then makes the grants inside the catalogue database, after every migration.
-- pgvector must be installed in the catalogue database by an administrator:
--   \c fashion
--   CREATE EXTENSION IF NOT EXISTS vector;

CREATE ROLE fashion LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :owner_pw;
CREATE ROLE fashion_pipeline LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :pipeline_pw;
CREATE ROLE fashion_search LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :search_pw;
CREATE ROLE fashion_events LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :events_pw;
CREATE ROLE fashion_airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :airflow_pw;

-- The owner acts for the pipeline: a migration may alter the index tables the pipeline owns,
-- and the owner's default privileges name it.
GRANT fashion_pipeline TO fashion WITH INHERIT TRUE, SET TRUE;

-- The catalogue: owned by fashion, open to the catalogue roles only.
CREATE DATABASE fashion OWNER fashion;
REVOKE CONNECT, TEMPORARY ON DATABASE fashion FROM PUBLIC;
GRANT CONNECT ON DATABASE fashion TO fashion_pipeline, fashion_search, fashion_events;

-- Airflow's metadata: owned by Airflow's role, open to it alone.
CREATE DATABASE airflow OWNER fashion_airflow;
REVOKE CONNECT, TEMPORARY ON DATABASE airflow FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE airflow TO fashion_airflow;
