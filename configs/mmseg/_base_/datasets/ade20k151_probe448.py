# ADE20K (ADEChallengeData2016), 151 classes (label 0 "other" is a class), in the linear-probe
# protocol of probe448.py.
_base_ = ['./probe448.py']
dataset_type = 'ADE20K151Dataset'
data_root = 'data/ade/ADEChallengeData2016'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
    )
)
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
    )
)
test_dataloader = val_dataloader
