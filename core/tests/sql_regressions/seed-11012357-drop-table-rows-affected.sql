# kind: Answer
# finding: statement 2: deeb answered StatementResult { rows_affected: 0, last_insert_id: 0 }, SQLite StatementResult { rows_affected: 2, last_insert_id: 0 }
# found by: DEEB_DIFF_SEED=11012357 (shrunk in 68 runs)
# seed: 11012357
CREATE TABLE t4(c0 BLOB, c1 TEXT NOT NULL DEFAULT ('b'), c2 DEFAULT (2.5), c3 TEXT COLLATE RTRIM)
;;
CREATE TABLE t5(k TEXT PRIMARY KEY, c0 NUMERIC NOT NULL, c1, c2 CHECK(c2 IS NULL OR c2 <> 7), c3 REAL, CHECK(c0 IS NULL OR length(c0) < 40))
--;;
CREATE TABLE t11(id INTEGER PRIMARY KEY, c0 NUMERIC NOT NULL UNIQUE, g  AS (upper(c0)), p INTEGER DEFAULT 0 REFERENCES t5(k) ON DELETE CASCADE ON UPDATE SET DEFAULT DEFERRABLE INITIALLY DEFERRED)
--;;
INSERT INTO t11(id, c0, p) VALUES (5, 'a ', -1), (4, 2.5, 1000)
;;
INSERT INTO t4(c1, c2, c3) VALUES ('{"a":1}', 2.5, NULL) ON CONFLICT DO NOTHING
;;
DROP TABLE t11
