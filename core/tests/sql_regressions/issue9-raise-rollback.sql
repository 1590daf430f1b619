# kind: NodeStopped (issue 9, item 2)
# finding: the leader stops with "SQLite rolled back the batch transaction"
CREATE TABLE t(id INTEGER PRIMARY KEY, x)
--;;
CREATE TRIGGER r BEFORE INSERT ON t WHEN NEW.x = 'no' BEGIN SELECT RAISE(ROLLBACK, 'refused'); END
--;;
INSERT INTO t VALUES(1, 'yes')
--;;
INSERT INTO t VALUES(2, 'no')
--;;
INSERT INTO t VALUES(3, 'yes')
