# next session: short conv (taps vs grouped), training ratios with it, GLA save_states row and fla same run
. workdirs/gpu/prefix.sh
T0=$(date +%s)
timeout 60 python3 -c "from experiments.bench import fftconv as f; f.short_conv_case()" > $OUT/b3_short_conv.jsonl 2> $OUT/b3_short_conv.err
echo "short conv done $(( $(date +%s)-T0 ))s"
timeout 300 python3 experiments/benchmark_training.py --mixers attention,gla,mamba --steps 12 > $OUT/b3_training.jsonl 2> $OUT/b3_training.err
echo "training done $(( $(date +%s)-T0 ))s"
rest=$(( 560 - $(date +%s) + T0 ))
timeout $rest python3 -c "
from experiments.bench import linear_attention as l
import jax
l.emit(case='linear_attention/setup', device=jax.devices()[0].device_kind, jax=jax.__version__)
l._op_cases(l.SHAPES[0], ('gla',), peer_ops=('gla',))
l.SWEEP = []
l.GLA_SWEEP = [dict(save_states=True), dict(save_states=False)]
l.sweep(ops=('gla',))
" > $OUT/b3_gla.jsonl 2> $OUT/b3_gla.err
echo "gla done $(( $(date +%s)-T0 ))s"
cd $OUT && tail -c 3000 *.err > errs_tail_b3.txt; rm -f *.err
