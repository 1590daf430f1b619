# kind: NodeStopped
# finding: seed 1269: node 3 stopped: node 3 stopped: database: sqlite: database or disk is full
# found by: DEEB_DIFF_SEED=1269 (shrunk in 23 runs)
# seed: 1269
CREATE TABLE t6(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 VARCHAR(10) NOT NULL, c1 NUMERIC DEFAULT (9223372036854775807), c2 INTEGER NOT NULL, c3 BLOB NOT NULL, g  AS (upper(c0)) STORED)
--;;
REPLACE INTO t6(id, c0, c1, c2, c3) VALUES (4, 'b', 2.5, 5, x'ff'), (9223372036854775807, 'b', '[1,2]', 1000, x''), (5, 'a ', 5, 2, x'00') ON CONFLICT DO NOTHING
--;;
INSERT INTO t6 DEFAULT VALUES
