# Call 4: Mosaic GPU backward (mask split) + tanh.approx; GLA / DeltaNet with the loss in the timed step; fla.
. workdirs/gpu/prefix.sh
T0=$(date +%s)
# Resume two experiment runs cut by the last call (their workdirs are still on this warm machine).
R=/tmp/r
( export XLA_PYTHON_CLIENT_PREALLOCATE=false SEQUAX_CACHE=/tmp/sqcache
  timeout -s INT -k 20 200 python3 experiments/recall.py --config recall/induction_heads:mamba --config.train.num_steps=40000 --workdir $R/ind40 > $R/ind40_b.log 2>&1 &
  timeout -s INT -k 20 200 python3 experiments/length_generalization.py --config length_generalization/task_hinting --config.experiment.only=sort_plain --workdir $R/sort_plain > $R/sort_plain_b.log 2>&1 &
  wait; cd $R && tar czf $OUT/resumed.tgz --exclude='*tfevents*' --exclude='*checkpoint*' ind40_b.log sort_plain_b.log ind40 sort_plain ) &
JAX_PLATFORMS=cuda timeout 170 python3 -m pytest -q -m gpu tests/pallas_kernels/test_flash_attention_mosaic_gpu.py tests/pallas_kernels/test_flash_attention.py -k "mosaic or tanh" > $OUT/d4_tests.txt 2>&1
echo "tests rc=$? $(( $(date +%s)-T0 ))s"
timeout 100 python3 -c "from experiments.bench import attention as a; a.mosaic_gpu_cases()" > $OUT/d4_mgpu_cases.jsonl 2> $OUT/d4_mgpu_cases.err
echo "mgpu cases rc=$? $(( $(date +%s)-T0 ))s"
timeout 70 python3 -c "
from experiments.bench import linear_attention as b
from experiments.bench.common import run_case
shape = b.SHAPES[0]
for op in ('gla', 'delta_rule'):
    args = b._inputs(op, *shape)
    run_case(op + '/pallas', lambda op=op, args=args: b._measure(b._op(op, 'pallas', None), args, iters=10), shape=list(shape))
" > $OUT/d4_la.jsonl 2> $OUT/d4_la.err
echo "la rc=$? $(( $(date +%s)-T0 ))s"
lim=$(( 545 - $(date +%s) + T0 ))
timeout $lim python3 experiments/bench/peers_linear_attention.py --shape 2,16384,16,128 --ops gla,delta_rule > $OUT/d4_fla.jsonl 2> $OUT/d4_fla.err
echo "fla rc=$? $(( $(date +%s)-T0 ))s"
wait
cd $OUT && for f in *.err; do tail -c 2500 $f > $f.tail; done; rm -f *.err
