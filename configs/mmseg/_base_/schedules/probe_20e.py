# The AnyUp/JAFAR probe schedule: AdamW 5e-4 (betas 0.9/0.999, weight decay 1e-5), 20 epochs,
# cosine annealing stepped once per epoch (JAFAR stepped it per iteration; AnyUp fixed that),
# validation after every epoch. T_max follows max_epochs: change both together.
max_epochs = 20
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-5),
)
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0.0,
        by_epoch=True,
        begin=0,
        end=max_epochs,
    )
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
