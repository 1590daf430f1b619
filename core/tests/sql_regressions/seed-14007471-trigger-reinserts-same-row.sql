# kind: Replicas
# finding: replicas differ: dumps equal (state outside the dump?); (node, index, digest) [(1, 8, 3801119330842387624), (2, 8, 15035002698802024396), (3, 8, 15035002698802024396)]
# found by: DEEB_DIFF_SEED=14007471 (shrunk in 43 runs)
# seed: 14007471
CREATE TABLE t2(k TEXT PRIMARY KEY, c0 REAL DEFAULT (1.5))
--;;
CREATE TRIGGER g5 BEFORE DELETE ON t2 WHEN OLD.k IS NOT NULL BEGIN DELETE FROM t2 WHERE k = OLD.k; INSERT OR IGNORE INTO t2(k) VALUES (OLD.k); END
--;;
INSERT INTO t2(k) VALUES ('{"a":1}'), ('a ')
--;;
DELETE FROM t2
