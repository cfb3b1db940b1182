"""drivetl.data.formats: a reader and a writer per source format, each yielding `FrameRecord`s.

- `waymo`: Waymo Open Dataset v1 TFRecords (read, write, random access by record index,
  conversion into the training cache), on the TFRecord container of `_tfrecord`;
- `team`: the team format (a folder with its rig.yaml), written by the simulator and the importers;
- `kitti`, `dgp`, `av2`: importers of the KITTI object layout, TRI DGP scenes and Argoverse 2 logs
  into the team format;
- `bag`: ROS 1 / ROS 2 bags and MCAP files (PointCloud2, images, CameraInfo, tf) into the team format;
- `pointfile`: point files (.pcd, .ply, .bin, .npy, .npz) with named columns.

Readers never normalize: what they yield is what the source recorded (`drivetl.data.records`).
"""
