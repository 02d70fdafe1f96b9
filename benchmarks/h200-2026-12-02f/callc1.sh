# profiles: where a training step's device time goes (attention, gla, mamba, hyena); the FFT kernel's
# bottleneck rows and per-pass times
. workdirs/gpu/prefix.sh
T0=$(date +%s)
timeout 230 python3 experiments/benchmark_training.py --profile --mixers attention,gla,mamba,hyena > $OUT/c1_profile.jsonl 2> $OUT/c1_profile.err
echo "profile done $(( $(date +%s)-T0 ))s"
timeout 170 python3 -c "from experiments.bench import fftconv as f; f.diagnose()" > $OUT/c1_fft.jsonl 2> $OUT/c1_fft.err
echo "fft diagnose done $(( $(date +%s)-T0 ))s"
cd $OUT && tail -c 3000 *.err > errs_tail_c1.txt; rm -f *.err
