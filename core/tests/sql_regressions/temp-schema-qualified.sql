# kind: Accepted
# finding: deeb accepted a request that creates temporary objects (state outside replication)
# found by: DEEB_DIFF_SEED=1037 (shrunk in 34 runs)
# seed: 1037
CREATE TABLE temp.tmp6(x)
