"""drivetl.data: source formats, and the one sample pipeline from records to batches.

- `formats/`: a reader and a writer per source (Waymo v1 TFRecords, the team folder, KITTI, DGP,
  point files), each yielding `FrameRecord`s as recorded;
- the pipeline (DESIGN.md's hops 1 to 3): `records` (FrameRecord, Sample), `canonicalize` (rig-driven,
  one explicit step), `augment`, `collate` (the typed `Batch`), `dataset` (`BatchSpec`, `FrameSet`,
  `FrameDataset`, `Collate`, `open_source`: what pretraining, fine-tuning and evaluation share),
  `datamodule` (the Lightning data modules), `cache` (the training cache);
- `check`: the data report of ``drivetl check``; `synthetic`: seeded synthetic samples for tests.

Importing this package imports none of its modules.
"""
