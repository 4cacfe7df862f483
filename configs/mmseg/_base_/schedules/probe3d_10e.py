# Probe3D's probe schedule: AdamW lr 5e-4 (weight decay 0.01), 10 epochs, stepped per
# iteration: linear warm-up from 0.01x over 1.5 epochs, then cosine down to 0.01x. Probe3D's
# own cosine is 0.99 cos(pi/2 t) + 0.01 (a quarter period); MMEngine's CosineAnnealingLR is
# the usual half period, 0.01 + 0.99 (1 + cos(pi t)) / 2. Validation (on the test split) after
# every epoch is for the logs only: the result is the last epoch's (the configs keep no
# "best" checkpoint, which would be picked on the test split).
max_epochs = 10
warmup_epochs = 1.5
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, begin=0, end=warmup_epochs, by_epoch=True,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', begin=warmup_epochs, end=max_epochs, eta_min_ratio=0.01,
         by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
