# kind: NodeStopped (found by hand from seed 1377292299)
# finding: an upsert whose BEFORE UPDATE trigger deletes the row being updated (undefined in SQLite) answers SQLITE_CORRUPT from a well-formed database; the leader took that for a damaged disk and stopped. Now the statement is undone, the database checked (quick_check), and the client gets SQLite's error.
CREATE TABLE t3(k TEXT PRIMARY KEY, c0, c1 NUMERIC NOT NULL UNIQUE)
--;;
CREATE TRIGGER g BEFORE UPDATE ON t3 BEGIN DELETE FROM t3 WHERE k = OLD.k; END
--;;
INSERT INTO t3(k, c0, c1) VALUES ('q', 'q', -2), ('a ', 'a ', 4)
--;;
INSERT INTO t3(k, c0, c1) VALUES (2, 2, 1), ('a ', 2, 6), ('B', 1, 11), (2, 'B', 16) ON CONFLICT(k) DO UPDATE SET c0 = excluded.c0
--;;
--query
SELECT * FROM t3
--;;
INSERT INTO t3(k, c0, c1) VALUES ('y', 1, 100)
--;;
--query
SELECT k, c1 FROM t3 WHERE c1 >= 50
