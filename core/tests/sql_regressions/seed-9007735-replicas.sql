# kind: Replicas
# finding: nodes answer the same query differently: node 1: [(0, 'b', 3, NULL), (6, '{"a":1}', 7, NULL)]; node 2: [(0, 'b', 3, NULL), (5, 'b', 6, NULL)]; node 3: [(0, 'b', 3, NULL), (5, 'b', 6, NULL)]
# found by: DEEB_DIFF_SEED=9007735 (shrunk in 41 runs)
# seed: 9007735
CREATE TABLE t2(a INTEGER, b TEXT, c0 INT DEFAULT (6), c1 REAL, PRIMARY KEY(a, b)) STRICT
--;;
INSERT OR IGNORE INTO t2(a, b, c0) VALUES (0, 'b', 3)
;;
INSERT OR ABORT INTO t2(a, b, c0) VALUES (5, '[1,2]', NULL), (6, '{"a":1}', 7), (5, 'b', 6)
--;;
--query
SELECT * FROM t2 WHERE c0 IN (SELECT c0 FROM t2 LIMIT 3)
