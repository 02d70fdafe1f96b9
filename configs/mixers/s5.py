"""S5 (one MIMO diagonal SSM, block HiPPO-N init, parallel scan) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/s5.py --workdir /tmp/s5

Not yet tuned (tests/test_configs.py lists it in NOT_YET_TUNED): no run on the 2-core CPU has yet
reached 0.9 eval accuracy, even on the much easier MQAR variants the other time-invariant mixers
learn (configs/mixers/s4d.py: vocabulary 16, sequences of 32 tokens, d_model 128, gated MLP). With
4 key-value pairs: 0.39-0.43 from step 100 to steps 250-450 (state_size 128 or 256, 2 to 4 layers,
d_model 128 or 256, learning rate 3e-3 or 1e-2). With 2 pairs, where S4D reaches 0.96 in 600 steps
and the long convolution 1.0 in 1000 (at learning rate 1e-2, after a plateau to step ~400): 0.57
after the full 600 steps (state_size 128, blocks 4, learning rate 3e-3; 106 s of CPU time);
0.52-0.58 through steps 650-900 of 1000-step schedules at learning rate 1e-2 (state_size 128 with 4
blocks, 256 with 8); and 0.52-0.59 up to steps 250-500 with state_size 256 (blocks 8 or 16), dt_max
1 or 10, state_size 512 in 32 blocks at d_model 64, 3 layers at d_model 64, 4 layers at d_model
128, or learning rate 1e-2 with ssm_learning_rate 3e-3. Untried: training past 1000 steps.
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s5"
    config.model.mixer_kwargs = dict(state_size=32, blocks=4, discretization="zoh")
    return config
