"""drivetl.data.formats: a reader and a writer per source format, each yielding `FrameRecord`s.

- `waymo`: Waymo Open Dataset v1 TFRecords (read, write, random access by record index,
  conversion into the training cache), on the TFRecord container of `_tfrecord`;
- `team`: the team format (a folder with its rig.yaml), written by the simulator and the importers;
- `kitti`, `dgp`: importers of the KITTI object layout and TRI DGP scenes into the team format;
- `pointfile`: point files (.pcd, .ply, .bin, .npy, .npz) with named columns.

Readers never normalize: what they yield is what the source recorded (`drivetl.data.records`).
"""
