# kind: Answer
# finding: statement 1: deeb answered StatementResult { rows_affected: 0, last_insert_id: 0 }, SQLite StatementResult { rows_affected: 3, last_insert_id: 0 }
# found by: DEEB_DIFF_SEED=13007052 (shrunk in 63 runs)
# seed: 13007052
CREATE TABLE t2(a INTEGER, b TEXT, c0 TEXT COLLATE RTRIM NOT NULL, PRIMARY KEY(a, b)) WITHOUT ROWID
--;;
DROP TABLE t2
;;
CREATE TABLE t2(x)
--;;
CREATE UNIQUE INDEX i3 ON t2(x)
--;;
CREATE TABLE IF NOT EXISTS t4(c0 NUMERIC, c1 INTEGER DEFAULT (2.5), c2, p INTEGER REFERENCES t2(x) ON DELETE SET NULL ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED)
--;;
INSERT INTO t4(c0, c2, p) VALUES (NULL, 'a', 9223372036854775000), ('b', 0, 1), ('{"a":1}', 9, 5)
;;
DROP TABLE t4
