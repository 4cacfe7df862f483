# PASCAL VOC 2012, 21 classes, official train (1,464) / val (1,449) lists, no SBD, in the
# linear-probe protocol of probe448.py.
_base_ = ['./probe448.py']
dataset_type = 'VOC2012Dataset'
data_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    )
)
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/val.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    )
)
test_dataloader = val_dataloader
