# COCO-Stuff, 27 coarse classes on the curated lists (IIC/STEGO), in the linear-probe protocol
# of probe448.py.
_base_ = ['./probe448.py']
dataset_type = 'CocoStuff27Dataset'
data_root = 'data/cocostuff'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='curated/train2017/Coco164kFull_Stuff_Coarse.txt',
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
    )
)
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='curated/val2017/Coco164kFull_Stuff_Coarse.txt',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    )
)
test_dataloader = val_dataloader
