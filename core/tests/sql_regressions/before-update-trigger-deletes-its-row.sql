# kind: reference malformed (SQLite's undefined behaviour)
# finding: seed 1377292299 (CI on 5217cfc): the generator's reference SQLite answered "database disk image is malformed"; a BEFORE UPDATE trigger deleting the row its upsert updates (undefined in SQLite) left a b-tree out of order without an error
# found by: DEEB_DIFF_SEED=1377292299 (shrunk by hand)
# The reference notices (integrity check) and holds deeb from there to equal replicas, live nodes and well-formed databases; deeb's leader replays statements with triggers from their recorded row changes, so its b-trees stay well formed.
CREATE TABLE t3(k TEXT PRIMARY KEY, c0, c1 NUMERIC NOT NULL UNIQUE)
--;;
CREATE TRIGGER g10 BEFORE UPDATE ON t3 BEGIN DELETE FROM t3 WHERE k = NEW.c1; END
--;;
INSERT INTO t3(k, c0, c1) VALUES ('x1', 'x1', 'x1'), ('a ', 'x1', -1), ('B', 2, 3)
--;;
ALTER TABLE t3 ADD COLUMN c19 BLOB
--;;
INSERT INTO t3(k, c0, c1, c19) VALUES ('x1', 'b', '[1,2]', x'00'), ('{"a":1}', -1, 0, x'') ON CONFLICT(k) DO UPDATE SET k = excluded.k
--;;
INSERT INTO t3(k, c0, c1, c19) VALUES ('{"a":1}', 8, 6, x''), ('B', 9, 'a ', x'0102') ON CONFLICT(k) DO UPDATE SET c19 = excluded.c19
--;;
--query
SELECT * FROM t3
--;;
INSERT INTO t3(k, c0, c1) VALUES ('z', 1, 100)
--;;
--query
SELECT k, c1 FROM t3 WHERE k = 'z'
