# kind: NodeStopped (issue 9, item 1)
# finding: followers stop with "replica divergence ... DELETE on table "c": row not found"
CREATE TABLE p(id INTEGER PRIMARY KEY)
--;;
CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id) ON DELETE CASCADE)
--;;
INSERT INTO p VALUES(1)
--;;
INSERT INTO c VALUES(10,1)
--;;
DELETE FROM p WHERE id=1
--;;
--query
SELECT * FROM c
