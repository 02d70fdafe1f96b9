# kernels: flash attention quick (new H200 rows + exp2 softcap), GLA vs fla same run, GLA sub/warp rows
. workdirs/gpu/prefix.sh
T0=$(date +%s)
timeout 200 python3 experiments/benchmark_attention.py --quick > $OUT/b1_attention.jsonl 2> $OUT/b1_attention.err
echo "attention done $(( $(date +%s)-T0 ))s"
timeout 170 python3 -c "
from experiments.bench import linear_attention as l
import jax
l.emit(case='linear_attention/setup', device=jax.devices()[0].device_kind, jax=jax.__version__)
l._op_cases(l.SHAPES[0], ('gla',), peer_ops=('gla',))
l._op_cases(l.SHAPES[1], ('gla',), peer_ops=('gla',))
" > $OUT/b1_gla_fla.jsonl 2> $OUT/b1_gla_fla.err
echo "gla vs fla done $(( $(date +%s)-T0 ))s"
timeout 120 python3 -c "
from experiments.bench import linear_attention as l
l.SWEEP = []
l.sweep(ops=('gla',))" > $OUT/b1_glasweep.jsonl 2> $OUT/b1_glasweep.err
echo "gla sweep done $(( $(date +%s)-T0 ))s"
rest=$(( 560 - $(date +%s) + T0 ))
[ $rest -gt 60 ] && timeout $rest python3 experiments/benchmark_attention.py > $OUT/b1_attention_full.jsonl 2> $OUT/b1_attention_full.err
echo "attention full done $(( $(date +%s)-T0 ))s"
cd $OUT && tail -c 3000 *.err > errs_tail.txt; rm -f *.err
