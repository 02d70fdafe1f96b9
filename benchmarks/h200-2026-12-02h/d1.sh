# Call 1: Mosaic GPU attention (tests, timing), softcap tanh, GLA save_states rows.
. workdirs/gpu/prefix.sh
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.used --format=csv > $OUT/smi.txt 2>&1
JAX_PLATFORMS=cuda timeout 200 python3 -m pytest -q -x -m gpu tests/pallas_kernels/test_flash_attention_mosaic_gpu.py > $OUT/d1_mgpu_tests.txt 2>&1
echo "mgpu tests rc=$? $(( $(date +%s)-T0 ))s"
timeout 170 python3 -c "from experiments.bench import attention as a; a.mosaic_gpu_cases()" > $OUT/d1_mgpu_cases.jsonl 2> $OUT/d1_mgpu_cases.err
echo "mgpu cases rc=$? $(( $(date +%s)-T0 ))s"
timeout 80 python3 -c "from experiments.bench import attention as a; a.softcap_tanh_cases()" > $OUT/d1_tanh.jsonl 2> $OUT/d1_tanh.err
echo "tanh rc=$? $(( $(date +%s)-T0 ))s"
JAX_PLATFORMS=cuda timeout 60 python3 -m pytest -q -m gpu tests/pallas_kernels -k softcap_tanh > $OUT/d1_tanh_test.txt 2>&1
echo "tanh test rc=$? $(( $(date +%s)-T0 ))s"
lim=$(( 560 - $(date +%s) + T0 ))
timeout $lim python3 -c "
from experiments.bench import linear_attention as b
from experiments.bench.common import run_case
shape = b.SHAPES[0]
args = b._inputs('gla', *shape)
for row in [{}, dict(save_states=True)]:
    run_case('sweep/gla', lambda row=row: b._with_table(row, lambda: b._measure(b._op('gla', 'pallas', None), args, iters=10)), **row)
for op in ('retention',):
    a2 = b._inputs(op, *shape)
    for row in [{}, dict(save_states=True)]:
        run_case('sweep/'+op, lambda row=row, op=op, a2=a2: b._with_table(row, lambda: b._measure(b._op(op, 'pallas', None), a2, iters=10)), **row)
" > $OUT/d1_save_states.jsonl 2> $OUT/d1_save_states.err
echo "save_states rc=$? $(( $(date +%s)-T0 ))s"
cd $OUT && for f in *.err; do tail -c 2500 $f > $f.tail; done; rm -f *.err
