# kind: NodeStopped
# finding: seed 1046: node 3 stopped: node 3 stopped: database: sqlite: sqlite3session_changeset
# found by: DEEB_DIFF_SEED=1046 (shrunk in 20 runs)
# seed: 1046
CREATE TABLE IF NOT EXISTS t2(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 VARCHAR(10) NOT NULL DEFAULT ('A'))
--;;
CREATE TABLE t3(c0 TEXT, c1 NUMERIC DEFAULT (0) CHECK(c1 IS NULL OR c1 <> 7), c2 NUMERIC, c3 BLOB DEFAULT (x'0102'), p INTEGER REFERENCES t2(id) ON DELETE SET DEFAULT ON UPDATE SET NULL)
--;;
INSERT INTO t2(id, c0) VALUES (2, 'b'), (5, 'A'), (5, 'x1') ON CONFLICT(id) DO UPDATE SET id = excluded.id
--;;
DROP TABLE t2
