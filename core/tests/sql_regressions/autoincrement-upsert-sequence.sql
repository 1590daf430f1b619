# kind: Replicas
# finding: replicas differ: table sqlite_sequence: rows differ: node 1 has [(1, 't9', 8)], node 2 has [(1, 't9', 0)]; (node, index, digest) [(1, 6, 11222600849681231905), (2, 6, 1186200485853503401), (3, 6, 1186200485853503401)]
# found by: DEEB_DIFF_SEED=1092 (shrunk in 50 runs)
# seed: 1092
CREATE TABLE t9(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 TEXT DEFAULT ('') UNIQUE, c1 TEXT NOT NULL)
--;;
INSERT OR IGNORE INTO t9(id, c1) VALUES (0, 'b'), (8, 'B') ON CONFLICT(id) DO UPDATE SET c1 = 'a '
