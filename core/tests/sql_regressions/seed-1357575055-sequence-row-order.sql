# kind: Dump
# finding: table sqlite_sequence: rows differ from SQLite: deeb has [(1, 't3', 6), (2, 't2', 0)], SQLite [(1, 't2', 0), (2, 't3', 6)]
# found by: DEEB_DIFF_SEED=1357575055 (shrunk in 24 runs; CI of commit 86e2969)
# seed: 1357575055
CREATE TABLE t2(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 NOT NULL, c1, c2 VARCHAR(10) DEFAULT ('a'), UNIQUE(c0, c1))
;;
CREATE TABLE t3(id INTEGER PRIMARY KEY AUTOINCREMENT, c0 REAL DEFAULT (NULL) CHECK(c0 IS NULL OR c0 <> 7), c1 NUMERIC DEFAULT ('a') UNIQUE, c2 BLOB NOT NULL)
--;;
CREATE TRIGGER g6 AFTER UPDATE ON t3 BEGIN UPDATE t2 SET c1 = NEW.c0 WHERE rowid = 1; INSERT OR IGNORE INTO t2(c1) VALUES (NEW.c0); END
;;
INSERT INTO t3(id, c1, c2) VALUES (6, 9, x''), (4, 1, x'0102') ON CONFLICT(id) DO UPDATE SET c2 = x'0102'
