# kind: Replicas
# finding: replicas differ: table t3: only rowids differ: node 1 has [(1, 5, 'a', 'b', NULL, 1), (2, 6, '2.5', 'x1', NULL, 1), (3, 6, '{"a":1}', '[1,2]', NULL, 2)], node 3 has [(1, 6, '{"a":1}', '[1,2]', NULL, 2), (2, 5, 'a', 'b', NULL, 1), (3, 6, '2.5', 'x1', NULL, 1)]; (node, index, digest) [(1, 6, 3870224301454929408), (2, 6, 3870224301454929408), (3, 6, 3870224301454929408)]
# found by: DEEB_DIFF_SEED=1003 (shrunk in 22 runs)
# seed: 1003
CREATE TABLE t3(a INTEGER, b TEXT COLLATE NOCASE, c0 VARCHAR(10), c1 INTEGER, g INTEGER AS (coalesce(json_valid(c0), 0) + 1), PRIMARY KEY(a, b))
--;;
INSERT OR ROLLBACK INTO t3(a, b, c0) VALUES (6, '{"a":1}', '[1,2]'), (5, 'a', 'b'), (6, 2.5, 'x1')
