# kind: NodeStopped
# finding: seed 5000874: node 1 stopped: node 1 stopped: replica divergence at index 10: changeset conflict: INSERT on table "t2": row already exists (CONFLICT)
# found by: DEEB_DIFF_SEED=5000874 (shrunk in 70 runs)
# seed: 5000874
CREATE TABLE t2(c0 REAL, c1 VARCHAR(10) DEFAULT ('a '), c2 VARCHAR(10), CHECK(c0 IS NULL OR length(c0) < 40))
--;;
CREATE TRIGGER g5 BEFORE INSERT ON t2 WHEN NEW.c1 IS NOT NULL BEGIN INSERT OR IGNORE INTO t2(c2) VALUES (NEW.c1); INSERT OR IGNORE INTO t2(c2) VALUES (NEW.c1); END
--;;
INSERT OR REPLACE INTO t2(c1, c2) VALUES ('', 2.5)
;;
INSERT INTO t2(c0, c2) SELECT c0, c2 FROM t2 ORDER BY 1 LIMIT 10
--;;
CREATE TRIGGER g9 AFTER INSERT ON t2 BEGIN DELETE FROM t2 WHERE c1 = NEW.c0; INSERT OR IGNORE INTO t2(c1) VALUES (NEW.c0); END
;;
INSERT INTO t2(c0, c1) VALUES (-0.5, 'A')
--;;
INSERT OR IGNORE INTO t2(c1) SELECT n FROM (SELECT row_number() OVER (ORDER BY 1) AS n FROM t2) LIMIT 20
--;;
UPDATE t2 SET c0 = s.rn FROM (SELECT rowid AS r, row_number() OVER (ORDER BY rowid) AS rn FROM t2) AS s WHERE t2.rowid = s.r
