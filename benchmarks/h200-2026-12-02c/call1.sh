# kernels: selective-scan pieces sweep, GLA stages and block-size sweep, compiled piece tests
# (after the two setup lines at the top of BENCHMARKS.md; OUT: a folder for the results)
T0=$(date +%s)
timeout 240 python3 -m experiments.bench.ssm --split > $OUT/c1_split.jsonl 2> $OUT/c1_split.err
echo "split done $(( $(date +%s)-T0 ))s"
timeout 100 python3 -m experiments.bench.linear_attention --stages > $OUT/c1_stages.jsonl 2> $OUT/c1_stages.err
echo "stages done $(( $(date +%s)-T0 ))s"
timeout 150 python3 -c "
from experiments.bench import linear_attention as l
l.SWEEP = l.SWEEP + [dict(warps=8, bk=32, sub=8), dict(warps=8, bk=32, sub=32), dict(warps=4, bk=32, sub=8)]
l.sweep(ops=('gla',))" > $OUT/c1_glasweep.jsonl 2> $OUT/c1_glasweep.err
echo "gla sweep done $(( $(date +%s)-T0 ))s"
JAX_PLATFORMS=cuda timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/pallas_kernels/test_selective_scan.py -k "pieces or every_gradient" > $OUT/c1_tests.txt 2>&1
echo "tests done $(( $(date +%s)-T0 ))s"
cd $OUT && tail -c 3000 *.err > errs_tail.txt; rm -f *.err
