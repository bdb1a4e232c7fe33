-- Every transition of a run counts one more advance on its row (`lock_run`), and every
-- runner's heartbeat updates its row: neither changes a column an index reads, so with
-- room left on the row's page PostgreSQL writes the new version there ("HOT") and adds no
-- entry to any of the table's indexes (runs has five). Full pages forbid it. Pages written
-- from now on keep the room; PostgreSQL only (SQLite updates rows in place).
ALTER TABLE runs SET (fillfactor = 80);
ALTER TABLE runners SET (fillfactor = 50);
