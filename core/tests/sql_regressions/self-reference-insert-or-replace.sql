# kind: NodeStopped
# finding: seed 5062: node 3 stopped: node 3 stopped: replica divergence at index 6: changeset conflict: change on table "": foreign key violation (FOREIGN_KEY)
# found by: DEEB_DIFF_SEED=5062 (shrunk in 16 runs)
# seed: 5062
CREATE TABLE t7(id INTEGER PRIMARY KEY, c0 TEXT NOT NULL DEFAULT ('A'), c1 VARCHAR(10) DEFAULT (4) UNIQUE, c2 REAL NOT NULL UNIQUE, c3 TEXT CHECK(c3 IS NULL OR c3 <> 7), p INTEGER REFERENCES t7(id) ON DELETE SET NULL ON UPDATE CASCADE, CHECK(c0 IS NULL OR length(c0) < 40))
--;;
INSERT OR REPLACE INTO t7(id, c0, c2, p) VALUES (7, 'A', 0.1, NULL), (6, '{"a":1}', 0.1, 0)
