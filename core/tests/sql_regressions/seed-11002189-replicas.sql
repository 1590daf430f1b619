# kind: Replicas
# finding: nodes answer the same query differently: node 1: [('["","[1,2]","A","b","B","b"]')]; node 2: [('["","[1,2]","A","b","B","b"]')]; node 3: [('["","[1,2]","A","B","b","b"]')]
# found by: DEEB_DIFF_SEED=11002189 (shrunk in 53 runs)
# seed: 11002189
CREATE TABLE t3(k TEXT PRIMARY KEY, c0 TEXT COLLATE NOCASE DEFAULT ('b'))
--;;
INSERT OR FAIL INTO t3(k, c0) VALUES ('', 'b'), ('{"a":1}', '')
--;;
UPDATE OR IGNORE t3 SET k = 'B', c0 = 'a ' WHERE c0 > 4
--;;
INSERT OR IGNORE INTO t3(k, c0) VALUES (randomblob(4), 'B'), ('b', 'A'), ('a', '[1,2]')
;;
REPLACE INTO t3(k) VALUES ('B'), ('x1')
--;;
--query
SELECT json_group_array(c0) FROM (SELECT c0 FROM t3 ORDER BY 1)
