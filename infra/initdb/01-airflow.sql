-- Airflow's metadata lives beside the catalogue, in its own database.
CREATE DATABASE airflow OWNER fashion;
