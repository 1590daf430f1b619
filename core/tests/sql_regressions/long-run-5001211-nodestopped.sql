# kind: NodeStopped
# finding: seed 5001211: node 2 stopped: node 2 stopped: replica divergence at index 8: changeset conflict: UPDATE on table "t4": row differs (DATA)
# found by: DEEB_DIFF_SEED=5001211 (shrunk in 39 runs)
# seed: 5001211
CREATE TABLE t4(c0 BLOB)
--;;
CREATE TRIGGER g6 BEFORE UPDATE ON t4 BEGIN UPDATE t4 SET c0 = NEW.c0 WHERE rowid = 1; END
;;
CREATE TRIGGER g7 AFTER UPDATE ON t4 BEGIN INSERT INTO t4(c0) VALUES (NEW.c0); INSERT OR IGNORE INTO t4(c0) VALUES (NEW.c0); END
;;
ALTER TABLE t4 ADD COLUMN c8 INTEGER
--;;
WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 30) INSERT OR IGNORE INTO t4(c0) SELECT x FROM s
--;;
UPDATE OR ABORT t4 SET c8 = coalesce(c8, 0) - 1
