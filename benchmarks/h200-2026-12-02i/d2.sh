# Call 2: issue 10 -- the 12-layer GLA vs attention model at L16K; GLA op beside fla's chunk_gla (same call).
. workdirs/gpu/prefix.sh
T0=$(date +%s)
timeout 230 python3 experiments/benchmark_training.py --mixers attention,gla --length 16384 --batch 2 --steps 10 > $OUT/d2_train16k.jsonl 2> $OUT/d2_train16k.err
echo "train16k rc=$? $(( $(date +%s)-T0 ))s"
timeout 70 python3 -c "
from experiments.bench import linear_attention as b
from experiments.bench.common import run_case
shape = b.SHAPES[0]
args = b._inputs('gla', *shape)
run_case('gla/pallas', lambda: b._measure(b._op('gla', 'pallas', None), args, iters=10), shape=list(shape))
" > $OUT/d2_gla.jsonl 2> $OUT/d2_gla.err
echo "gla rc=$? $(( $(date +%s)-T0 ))s"
timeout 80 python3 -c "from experiments.bench import linear_attention as b; b.delta_stages()" > $OUT/d2_delta_stages.jsonl 2> $OUT/d2_delta_stages.err
echo "delta stages rc=$? $(( $(date +%s)-T0 ))s"
lim=$(( 565 - $(date +%s) + T0 ))
TRITON_CACHE_DIR=/tmp/tcache timeout $lim python3 experiments/bench/peers_linear_attention.py --shape 2,16384,16,128 --ops gla > $OUT/d2_fla.jsonl 2> $OUT/d2_fla.err
echo "fla rc=$? $(( $(date +%s)-T0 ))s"
du -sh /tmp/tcache > $OUT/tcache_size.txt 2>&1; [ $(du -sm /tmp/tcache | cut -f1) -lt 40 ] && tar czf $OUT/tcache.tgz -C /tmp tcache
cd $OUT && for f in *.err; do tail -c 2500 $f > $f.tail; done; rm -f *.err
