# kind: Answer
# finding: statement 0: deeb answered StatementResult { rows_affected: 0, last_insert_id: 0 }, SQLite StatementResult { rows_affected: 2, last_insert_id: 0 }
# found by: DEEB_DIFF_SEED=15006131 (shrunk in 60 runs)
# seed: 15006131
CREATE TABLE t3(k TEXT PRIMARY KEY, c0 INTEGER CHECK(c0 IS NULL OR c0 <> 7))
--;;
INSERT OR IGNORE INTO t3(k) VALUES ('A'), ('b'), ('B')
--;;
INSERT OR REPLACE INTO t3(k, c0) VALUES ('{"a":1}', -1), ('', 9223372036854775000)
;;
REPLACE INTO t3(k) VALUES ('b'), ('A')
--;;
DELETE FROM t3 WHERE c0 IN (SELECT c0 FROM t3 LIMIT 3)
