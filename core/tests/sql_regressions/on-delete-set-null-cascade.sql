# kind: NodeStopped
# finding: seed 5756: node 2 stopped: node 2 stopped: replica divergence at index 12: changeset conflict: UPDATE on table "t16": row differs (DATA)
# found by: DEEB_DIFF_SEED=5756 (shrunk in 150 runs)
# seed: 5756
CREATE TABLE t2(a INTEGER, b TEXT, c0 ANY NOT NULL CHECK(c0 IS NULL OR c0 <> 7), c1 BLOB NOT NULL DEFAULT (x'0102') UNIQUE, PRIMARY KEY(a, b)) STRICT
--;;
CREATE TABLE t5(a INTEGER, b TEXT, c0 BLOB, c1 BLOB NOT NULL, c2 NUMERIC, PRIMARY KEY(a, b)) WITHOUT ROWID
--;;
CREATE TABLE t10(k TEXT PRIMARY KEY COLLATE RTRIM, c0 BLOB NOT NULL, c1 NUMERIC, UNIQUE(c0, c1), CHECK(c0 IS NULL OR length(c0) < 40)) WITHOUT ROWID
--;;
INSERT INTO t2(a, b, c0, c1) VALUES (8, 'b', 9, x'0102') ON CONFLICT DO NOTHING
;;
INSERT INTO t5(a, b, c0, c1, c2) VALUES (5, 'B', x'', x'0102', 'A'), (8, 'x1', x'', x'', NULL), (1, 'b', x'0102', x'', 'B')
;;
INSERT OR IGNORE INTO t5(a, b, c1, c2) VALUES (1, '{"a":1}', x'ff', 2.5)
--;;
INSERT INTO t5(a, b, c0, c1, c2) VALUES (2, 'B', 6, x'0102', 9), (6, 'b', x'ff', x'00', 1)
--;;
INSERT OR IGNORE INTO t10(k, c0, c1) SELECT n, n + 1, n + 2 FROM (SELECT row_number() OVER (ORDER BY 1) AS n FROM t5) LIMIT 16
--;;
CREATE TABLE t16(c0 TEXT NOT NULL DEFAULT ('A'), c1 TEXT DEFAULT ('a'), p INTEGER DEFAULT 0 REFERENCES t10(k) ON DELETE SET NULL ON UPDATE NO ACTION)
--;;
REPLACE INTO t16(c0, c1, p) VALUES ('', 'x1', 1), ('a', '{"a":1}', 6)
;;
DELETE FROM t10
