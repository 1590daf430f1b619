# kind: NodeStopped
# finding: seed 5002947: node 1 stopped: node 1 stopped: replica divergence at index 11: changeset conflict: DELETE on table "t2": row not found (NOTFOUND)
# found by: DEEB_DIFF_SEED=5002947 (shrunk in 50 runs)
# seed: 5002947
CREATE TABLE t2(c0 DEFAULT (2), c1 TEXT DEFAULT ('a'), c2 REAL)
--;;
CREATE TRIGGER g7 AFTER UPDATE ON t2 BEGIN DELETE FROM t2 WHERE c2 = NEW.c1; INSERT OR IGNORE INTO t2(c2) VALUES (NEW.c1); END
--;;
INSERT INTO t2(c1, c2) VALUES ('', 5), ('b', 1.5), ('a ', 1.5)
--;;
CREATE TRIGGER g8 AFTER DELETE ON t2 BEGIN INSERT OR ABORT INTO t2(c2) VALUES (OLD.c1); INSERT OR IGNORE INTO t2(c2) VALUES (OLD.c1); END
--;;
INSERT OR ABORT INTO t2(c1, c2) SELECT c1, c2 FROM t2 ORDER BY 1 LIMIT 10
--;;
INSERT OR IGNORE INTO t2(c0, c2) VALUES (8, 0), (2.5, 1.5), (9223372036854775000, -0.5) ON CONFLICT DO NOTHING
;;
INSERT OR FAIL INTO t2(c0) VALUES ('[1,2]'), ('a ')
--;;
UPDATE t2 SET c0 = s.rn FROM (SELECT rowid AS r, row_number() OVER (ORDER BY rowid) AS rn FROM t2) AS s WHERE t2.rowid = s.r
