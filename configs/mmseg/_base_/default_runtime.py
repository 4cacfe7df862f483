# Runtime shared by every config in configs/mmseg: registry scope, plugin import, hooks, logging.
default_scope = 'mmseg'
# Registers AnyUpNeck, AnyUpEncoderDecoder, the datasets, ... in MMSeg's registries, so these
# configs also run unchanged with MMSegmentation's own tools/train.py.
custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
# No fixed name: each run's visualizer is named after its experiment.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keeps the last epoch and the best-mIoU checkpoint.
    checkpoint=dict(
        type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=1, save_best='mIoU'
    ),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
)
