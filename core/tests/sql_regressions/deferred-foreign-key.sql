# kind: NodeStopped
# finding: seed 1070: node 2 stopped: node 2 stopped: database: sqlite: FOREIGN KEY constraint failed
# found by: DEEB_DIFF_SEED=1070 (shrunk in 41 runs)
# seed: 1070
CREATE TABLE t5(k TEXT PRIMARY KEY, c0, c1 NUMERIC NOT NULL, c2 DEFAULT ('b')) WITHOUT ROWID
--;;
CREATE TABLE t8(a INTEGER, b TEXT COLLATE RTRIM, c0 REAL NOT NULL CHECK(c0 IS NULL OR c0 <> 7), c1 TEXT, c2 INTEGER, c3 NUMERIC CHECK(c3 IS NULL OR c3 <> 7), p INTEGER REFERENCES t5(k) ON DELETE SET NULL ON UPDATE SET DEFAULT DEFERRABLE INITIALLY DEFERRED, PRIMARY KEY(a, b), UNIQUE(c0, c1))
--;;
INSERT INTO t8(a, b, c0, c1, c2, p) VALUES (5, '{"a":1}', 2.0, NULL, 9, 8), (3, 'B', 2.0, 'A', 6, 3)
