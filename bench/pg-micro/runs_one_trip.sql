\set r random(1, 1000)
BEGIN; UPDATE runs SET advances = advances + 1 WHERE id = :r RETURNING advances; UPDATE runs SET advances = advances + 1 WHERE id = :r RETURNING advances; UPDATE runs SET advances = advances + 1 WHERE id = :r RETURNING advances; UPDATE runs SET advances = advances + 1 WHERE id = :r RETURNING advances; COMMIT;
