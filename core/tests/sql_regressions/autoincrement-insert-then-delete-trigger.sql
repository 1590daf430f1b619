# kind: Replicas
# finding: replicas differ: table sqlite_sequence: rows differ: node 1 has [], node 3 has [(1, 't4', 8)]; (node, index, digest) [(1, 7, 8796828943771622808), (2, 7, 8796828943771622808), (3, 7, 785979287529436444)]
# found by: DEEB_DIFF_SEED=5021 (shrunk in 19 runs)
# seed: 5021
CREATE TABLE t4(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 VARCHAR(10) DEFAULT ('[1,2]') CHECK(c0 IS NULL OR c0 <> 7), CHECK(c0 IS NULL OR length(c0) < 40))
--;;
CREATE TRIGGER g5 AFTER INSERT ON t4 BEGIN DELETE FROM t4 WHERE id = NEW.id; END
--;;
INSERT OR REPLACE INTO t4(id, c0) VALUES (3, 'A'), (8, 'A'), (4, 'x1') ON CONFLICT(id) DO UPDATE SET id = -1
