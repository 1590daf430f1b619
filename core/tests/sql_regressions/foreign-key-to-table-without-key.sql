# kind: NodeStopped
# finding: seed 1116: node 1 stopped: node 1 stopped: sqlite: sqlite3changeset_apply
# found by: DEEB_DIFF_SEED=1116 (shrunk in 38 runs)
# seed: 1116
CREATE TABLE t13(k TEXT PRIMARY KEY, c0 NUMERIC, c1 BLOB, p INTEGER DEFAULT 0 REFERENCES t10(id) ON DELETE SET DEFAULT ON UPDATE NO ACTION)
--;;
CREATE TABLE t10(x)
--;;
INSERT INTO t10 DEFAULT VALUES
