# kind: NodeStopped
# finding: seed 1008: node 1 stopped: node 1 stopped: replica divergence at index 7: changeset conflict: INSERT on table "t2": row already exists (CONFLICT)
# found by: DEEB_DIFF_SEED=1008 (shrunk in 28 runs)
# seed: 1008
CREATE TABLE t2(k TEXT PRIMARY KEY COLLATE NOCASE, c0 NUMERIC UNIQUE, c1 NUMERIC NOT NULL UNIQUE CHECK(c1 IS NULL OR c1 <> 7), c2 TEXT DEFAULT ('B'))
--;;
ALTER TABLE t2 ADD COLUMN c3 BLOB
--;;
INSERT OR REPLACE INTO t2(k, c0, c1, c3) VALUES ('A', 2.5, 2.5, x'0102'), ('a', 9, 8, x'00')
