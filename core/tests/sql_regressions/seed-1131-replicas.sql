# kind: Replicas
# finding: replicas differ: dumps equal (state outside the dump?); (node, index, digest) [(1, 8, 2707000263158298616), (2, 8, 2707000263158298616), (3, 8, 4785540858405133268)]
# found by: DEEB_DIFF_SEED=1131 (shrunk in 42 runs)
# seed: 1131
CREATE TABLE t2(k TEXT PRIMARY KEY, c0 BLOB, c1 NOT NULL, c2, c3 VARCHAR(10) DEFAULT ('x1'))
--;;
ALTER TABLE t2 ADD COLUMN c6 INTEGER NOT NULL
--;;
INSERT INTO t2(k, c1, c3, c6) VALUES ('', 5, '', 9223372036854775000), ('{"a":1}', 5, 'B', 1)
--;;
INSERT OR REPLACE INTO t2(k, c0, c1, c2, c3, c6) SELECT k, c0, c1, c2, c3, c6 FROM t2 ORDER BY 1 LIMIT 10
