# kind: Replicas (issue 9, item 5)
# finding: sqlite_sequence differs between the leader and the followers
CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, x)
--;;
INSERT INTO t(x) VALUES ('a'), ('b')
--;;
UPDATE t SET id = id + 1000
--;;
--query
SELECT * FROM sqlite_sequence
