# Runtime shared by the AnyUp trainer configs (MMEngine, registry scope 'anyup_plugin').
default_scope = 'anyup_plugin'
custom_imports = dict(imports=['anyup_plugin.training'], allow_failed_imports=False)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
randomness = dict(seed=0)
log_level = 'INFO'
# Loss terms and their unweighted cosine / MSE parts are all logged as running means. Only flat
# (training) keys: validation metrics ('upsampling/student/loss', ...) must be logged as they
# are, not averaged with the previous validations as MMEngine's default pattern would.
log_processor = dict(
    by_epoch=False,
    window_size=50,
    mean_pattern=r'^[^/]*(loss|time|data_time|grad_norm|_cos|_mse)[^/]*$',
)
load_from = None
resume = False

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# Plain AnyUp state dicts (published key names) next to MMEngine's checkpoints;
# tools/train.py also adds WeightsOnlyCheckpointHook so that --resume works with torch >= 2.6.
custom_hooks = [dict(type='ExportStudentHook', interval=5000)]

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
