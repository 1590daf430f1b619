# kind: Replicas
# finding: replicas differ: table t2: rows differ: node 1 has [], node 3 has [(1, blob(6392 bytes), NULL, NULL, NULL)]; (node, index, digest) [(1, 6, 14417200456941074609), (2, 6, 14417200456941074609), (3, 6, 1489043154280753213)]
# found by: DEEB_DIFF_SEED=1010 (shrunk in 29 runs)
# seed: 1010
CREATE TABLE t2(a INTEGER, b TEXT, c0, c1 NUMERIC, PRIMARY KEY(a, b))
--;;
INSERT INTO t2(a) VALUES (zeroblob(6392))
