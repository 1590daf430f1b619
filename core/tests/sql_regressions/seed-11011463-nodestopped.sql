# kind: NodeStopped
# finding: seed 11011463: node 2 stopped: node 2 stopped: replica divergence at index 8: changeset has 2 change(s) but 3 row(s) were modified
# found by: DEEB_DIFF_SEED=11011463 (shrunk in 49 runs)
# seed: 11011463
CREATE TABLE t3(k TEXT PRIMARY KEY, c0, c1 TEXT, c2 VARCHAR(10) NOT NULL UNIQUE CHECK(c2 IS NULL OR c2 <> 7), c3 BLOB NOT NULL CHECK(c3 IS NULL OR c3 <> 7)) WITHOUT ROWID
--;;
INSERT OR FAIL INTO t3(k, c0, c1, c2, c3) VALUES ('A', 3, 'B', 'A', x'00')
--;;
INSERT OR REPLACE INTO t3(k, c0, c1, c2, c3) VALUES ('', 2.5, '', 'x1', x'ff'), ('x1', 'a ', 'A', 'B', x'00') ON CONFLICT(k) DO UPDATE SET c2 = excluded.c2
--;;
INSERT OR REPLACE INTO t3(k, c0, c1, c2, c3) VALUES ('x1', '[1,2]', '[1,2]', 'A', x'00'), ('{"a":1}', 9, 9, 'x1', 2.5), ('A', 'b', 'a ', 'B', x'')
