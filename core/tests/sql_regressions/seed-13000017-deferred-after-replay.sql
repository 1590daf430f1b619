# kind: Answer
# finding: failed at statement Some(0) (FOREIGN KEY constraint failed (the request leaves a foreign key violated: checked in full because a statement was replayed)) where SQLite failed at None (FOREIGN KEY constraint failed (at commit))
# found by: DEEB_DIFF_SEED=13000017 (shrunk in 17 runs)
# seed: 13000017
CREATE TABLE t2(id INTEGER PRIMARY KEY, c0 TEXT DEFAULT ('{"a":1}'), c1 NUMERIC DEFAULT (3), c2 INTEGER, c3 BLOB, CHECK(c0 IS NULL OR length(c0) < 40))
--;;
CREATE TABLE t3(c0 REAL, p INTEGER REFERENCES t2(id) ON DELETE SET NULL ON UPDATE NO ACTION DEFERRABLE INITIALLY DEFERRED)
--;;
INSERT OR ABORT INTO t3(p) VALUES (5), (5)
