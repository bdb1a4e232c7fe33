\set r random(1, 1000)
\set s (:r - 1) * 20 + random(1, 19)
BEGIN;
UPDATE runs SET advances = advances + 1 WHERE id = :r RETURNING advances;
SELECT set_config('plue.read_here', CAST(:s AS TEXT), true);
UPDATE step_runs SET status = 'succeeded', finished_at = 1 WHERE id = :s;
UPDATE step_runs SET status = 'queued', ready_at = 5 WHERE id = :s + 1;
UPDATE step_runs SET status = 'claimed', attempts = attempts + 1 WHERE id = :s + 1;
UPDATE step_runs SET status = 'pending' WHERE id = :s;
COMMIT;
