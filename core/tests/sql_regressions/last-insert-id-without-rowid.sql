# kind: Answer
# finding: statement 0: deeb answered StatementResult { rows_affected: 22, last_insert_id: 3 }, SQLite StatementResult { rows_affected: 22, last_insert_id: 0 }
# found by: DEEB_DIFF_SEED=1002 (shrunk in 3 runs)
# seed: 1002
CREATE TABLE t2(a INTEGER, b TEXT, c0 REAL, c1 INTEGER NOT NULL DEFAULT (1), PRIMARY KEY(a, b)) WITHOUT ROWID
--;;
WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 22) INSERT OR ROLLBACK INTO t2(a, b, c0, c1) SELECT x, x + 1, x + 2, x + 3 FROM s
