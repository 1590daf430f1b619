# kind: NodeStopped
# finding: seed 1006: node 2 stopped: node 2 stopped: database: SQLite rolled back the batch transaction
# found by: DEEB_DIFF_SEED=1006 (shrunk in 41 runs)
# seed: 1006
CREATE TABLE t3(id INTEGER PRIMARY KEY, c0 NUMERIC, c1 NUMERIC DEFAULT ('B') CHECK(c1 IS NULL OR c1 <> 7), c2 VARCHAR(10) CHECK(c2 IS NULL OR c2 <> 7), c3 BLOB UNIQUE CHECK(c3 IS NULL OR c3 <> 7), CHECK(c0 IS NULL OR length(c0) < 40))
--;;
INSERT OR ROLLBACK INTO t3(id, c1, c2) VALUES (9, 7, '[1,2]')
