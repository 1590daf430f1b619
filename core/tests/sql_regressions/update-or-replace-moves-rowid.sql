# kind: Replicas
# finding: replicas differ: dumps equal (state outside the dump?); (node, index, digest) [(1, 7, 5475759315148941623), (2, 7, 12160563647963264709), (3, 7, 5475759315148941623)]
# found by: DEEB_DIFF_SEED=30003431 (shrunk in 57 runs)
# seed: 30003431
CREATE TABLE t4(k TEXT PRIMARY KEY, c0 INTEGER DEFAULT (NULL) UNIQUE)
--;;
WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 19) INSERT OR ROLLBACK INTO t4(k) SELECT x FROM s
--;;
UPDATE OR REPLACE t4 SET k = (SELECT max(k) FROM t4) WHERE c0 IS NULL
