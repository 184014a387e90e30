-- Run once by the postgres image when its data volume is empty.
-- An application role and database, and the monitoring role the
-- postgres-monitor collector logs in with (pg_monitor: sees every session in
-- pg_stat_activity, nothing more).
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE app OWNER app;
CREATE ROLE poolwatch_monitor LOGIN PASSWORD 'monitor' IN ROLE pg_monitor;
