# FFT conv rows at L16K (alone on the GPU); then, side by side: issue 14 row 3 (Mamba induction heads,
# 20K steps, two learning rates) and the device-time profiles of the GLA and Mamba training steps
. workdirs/gpu/prefix.sh
T0=$(date +%s)
timeout 150 python3 -c "
from experiments.bench import fftconv as f
f.diagnose(lengths=(16384,), rows=[{}, dict(num_warps_bwd=4), dict(max_size=512), dict(max_size=1024),
           dict(max_size=512, num_warps_bwd=4), dict(precision='bf16')])" > $OUT/c2_fft.jsonl 2> $OUT/c2_fft.err
echo "fft done $(( $(date +%s)-T0 ))s"
export SEQUAX_CACHE=/tmp/sqcache
R=/tmp/r; mkdir -p $R
ilim=$(( 545 - $(date +%s) + T0 ))
timeout -s INT -k 15 $ilim python3 experiments/recall.py --config recall/induction_heads:mamba --workdir $R/ind_a --config.train.num_steps=20000 > $R/ind_a.log 2>&1 &
timeout -s INT -k 15 $ilim python3 experiments/recall.py --config recall/induction_heads:mamba --workdir $R/ind_b --config.train.num_steps=20000 --config.optimizer.learning_rate=1e-3 > $R/ind_b.log 2>&1 &
plim=$(( 540 - $(date +%s) + T0 ))
XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout $plim python3 experiments/benchmark_training.py --profile --mixers gla,mamba > $OUT/c2_profile.jsonl 2> $OUT/c2_profile.err
echo "profile done $(( $(date +%s)-T0 ))s"
wait
echo "induction done $(( $(date +%s)-T0 ))s"
cd $R && tar czf $OUT/induction.tgz --exclude='checkpoints' --exclude='*tfevents*' ind_a ind_b ind_a.log ind_b.log; cd - > /dev/null
cd $OUT && tail -c 3000 *.err > errs_tail_c2.txt; rm -f *.err
